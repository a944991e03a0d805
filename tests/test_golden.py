"""Golden text reports (torchinfo style): what a person reads, byte for byte.

To regenerate after an intended change, run
    BNCHECK_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
and review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, ROOT, cli

GOLDEN = ROOT / "tests" / "golden"
TMP = "<tmp>"


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("BNCHECK_REGEN_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_inspect_corrupt() -> None:
    r = cli("inspect", "fixtures/models/digits_corrupt.onnx")
    _check("inspect_digits_corrupt.txt", r.out)


def test_compare_bs1_mismatch() -> None:
    r = cli("compare", "fixtures/models/pix_bs1.onnx", "--data", "fixtures/data/pix_inputs.npy")
    assert r.code == 1
    _check("compare_pix_bs1.txt", r.out)


def test_compare_ok_output_with_a_diverging_layer(tmp_path: Path) -> None:
    # Brighter, higher-contrast digits: the output stays within tolerance, but the first layer's
    # running stats no longer describe the data. The report must say so, with the command.
    data = tmp_path / "brighter.npy"
    np.save(data, (np.load(DATA / "digits_x.npy") * 1.2 + 0.1).astype(np.float32))
    r = cli("compare", "fixtures/models/digits.onnx", "--data", data)
    text = r.out.replace(str(tmp_path), TMP)
    assert r.code == 0
    assert "verdict: OK" in text and "but the running stats of 1 layer(s)" in text
    assert "bncheck rewrite fixtures/models/digits.onnx --mode recalibrate" in text
    assert "WARN   features.1:" in text and "1 warn" in text.splitlines()[0]
    _check("compare_digits_brighter.txt", text)


@pytest.mark.parametrize("mode", ["fold", "instance-norm"])
def test_rewrite_report(tmp_path: Path, mode: str) -> None:
    model = "fixtures/models/pix_bs1.onnx"
    out = tmp_path / "out.onnx"
    r = cli("rewrite", model, "--mode", mode, "-o", out, "--data", "fixtures/data/pix_inputs.npy")
    assert r.code == 0
    _check(f"rewrite_pix_bs1_{mode}.txt", r.out.replace(str(tmp_path), TMP))
