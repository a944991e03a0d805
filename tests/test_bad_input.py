"""Bad input exits 2 with one plain sentence naming the file, never a traceback."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from conftest import cli, model_path


def _one_line_error(r, name: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == 2, (r.out, r.err)
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bncheck: error:"), r.err
    assert name in lines[0]


def test_missing_file() -> None:
    _one_line_error(cli("inspect", "nope/missing.pt"), "missing.pt")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    _one_line_error(cli("inspect", p), "empty.pt")


def test_random_bytes(tmp_path: Path) -> None:
    p = tmp_path / "noise.bin"
    p.write_bytes(os.urandom(4096).replace(b"\x80", b"\x81").replace(b"PK", b"QK"))
    _one_line_error(cli("inspect", p), "noise.bin")


@pytest.mark.parametrize("fmt", ["checkpoint", "full", "pt2", "torchscript", "safetensors", "onnx"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    src = model_path("digits", fmt)
    p = tmp_path / f"cut{src.name}"
    p.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    _one_line_error(cli("inspect", p, "--allow-pickle"), p.name)


def test_not_onnx_with_onnx_suffix(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_text("this is not a model\n" * 20)
    _one_line_error(cli("inspect", p), "model.onnx")


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))

    marker = ""


def test_pickle_needs_allow_pickle_and_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    _Evil.marker = str(marker)
    p = tmp_path / "evil.pt"
    with p.open("wb") as f:
        pickle.dump({"state_dict": evil}, f, protocol=2)
    r = cli("inspect", p)
    _one_line_error(r, "evil.pt")
    assert "--allow-pickle" in r.err
    assert not marker.exists()


def test_full_pickle_fixture_needs_allow_pickle() -> None:
    r = cli("inspect", model_path("digits", "full"))
    _one_line_error(r, "digits.full.pt")
    assert cli("inspect", model_path("digits", "full"), "--allow-pickle").code == 0


def test_arch_that_does_not_import() -> None:
    _one_line_error(cli("inspect", model_path("digits", "checkpoint"), "--arch", "no_such_pkg.mod:f"),
                    "no_such_pkg")


def test_arch_that_does_not_match() -> None:
    r = cli("inspect", model_path("digits", "checkpoint"), "--arch", "fixtures.archs:pix2pix")
    _one_line_error(r, "fixtures.archs:pix2pix")
    assert "missing" in r.err and "unexpected" in r.err


def test_bad_data(tmp_path: Path) -> None:
    import numpy as np

    m = model_path("digits", "onnx")
    _one_line_error(cli("compare", m, "--data", tmp_path / "none.npy"), "none.npy")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    _one_line_error(cli("compare", m, "--data", empty), "empty_dir")
    bad = np.zeros((4, 1, 8, 8), np.float32)
    bad[2, 0, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    r = cli("compare", m, "--data", tmp_path / "nan.npy")
    _one_line_error(r, "nan.npy")
    assert "1 NaN" in r.err and "sample 2" in r.err
    np.save(tmp_path / "shape.npy", np.zeros((4, 3, 8, 8), np.float32))
    r = cli("compare", m, "--data", tmp_path / "shape.npy")
    _one_line_error(r, "shape.npy")
    assert "(N, 1, 8, 8)" in r.err
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"not a png")
    _one_line_error(cli("compare", m, "--data", tmp_path / "imgs"), "a.png")


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bncheck.cli.app import app
    from bncheck.errors import BncheckError

    r = CliRunner().invoke(app, ["inspect", "missing.pt"], env={"BNCHECK_DEBUG": "1"})
    assert isinstance(r.exception, BncheckError)


@pytest.mark.parametrize("fmt", ["onnx", "full"])
def test_cuda_without_a_gpu_is_a_usage_error(fmt: str) -> None:
    import onnxruntime
    import torch

    if torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a GPU")
    r = cli("compare", model_path("digits", fmt), "--allow-pickle", "--data", "fixtures/data/digits_x.npy",
            "--device", "cuda")
    _one_line_error(r, "--device cuda")


def test_a_write_that_fails_midway_leaves_nothing(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from bncheck.backends.onnxrt.model import OnnxModel

    def full_disk(self, path, example, keep_dropout=False):  # type: ignore[no-untyped-def]
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(OnnxModel, "save", full_disk)
    out = tmp_path / "x.onnx"
    r = cli("rewrite", model_path("digits", "onnx"), "--mode", "fold", "-o", out, "--data",
            model_path("digits", "onnx").parent.parent / "data" / "digits_x.npy")
    _one_line_error(r, "x.onnx")
    assert "No space left" in r.err
    assert list(tmp_path.iterdir()) == []


def test_an_arch_module_that_raises_on_import_is_named_with_its_error() -> None:
    r = cli("inspect", model_path("digits", "checkpoint"), "--arch",
            "tests.support.raises_on_import:make")
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "importing tests.support.raises_on_import raised RuntimeError: " \
        "this module needs a GPU to import" in lines[0]


def test_ctrl_c_while_bncheck_imports_ends_it_without_a_traceback() -> None:
    import subprocess
    import sys

    # The interrupt arrives while the command line is being imported (typer first), the way a
    # Ctrl-C in the first few tenths of a second does: deterministic, unlike a timed signal.
    code = ("import sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'typer':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "sys.argv = ['bncheck', '--help']\n"
            "import bncheck.__main__\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 130, p.stderr
    assert "Traceback" not in p.stderr
