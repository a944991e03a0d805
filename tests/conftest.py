"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bncheck.cli.app import app

# Keras picks its backend at its first import; the tests' own imports of it must agree with
# bncheck's (which sets it for a process that has not imported Keras yet).
os.environ["KERAS_BACKEND"] = "torch"

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
MODELS = FIX / "models"
DATA = FIX / "data"
FORMATS = {
    "full": ".full.pt",
    "checkpoint": ".pth",
    "torchscript": ".torchscript.pt",
    "pt2": ".pt2",
    "safetensors": ".safetensors",
    "onnx": ".onnx",
}


def model_path(name: str, fmt: str) -> Path:
    """Path of fixture ``name`` in format ``fmt``."""
    return MODELS / f"{name}{FORMATS[fmt]}"


@dataclass
class CliResult:
    """Exit code and both streams."""

    code: int
    out: str
    err: str

    def json(self) -> dict:  # type: ignore[type-arg]
        """stdout parsed as one JSON document."""
        return json.loads(self.out)


def cli(*args: str | Path) -> CliResult:
    """Run bncheck in-process through typer's CliRunner."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return CliResult(r.exit_code, r.stdout, r.stderr)


@pytest.fixture(autouse=True)
def _run_in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # --arch fixtures.archs:... and the pickled fixtures import from the repository root.
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def truth() -> dict:  # type: ignore[type-arg]
    """What make_fixtures.py measured."""
    return json.loads((FIX / "truth.json").read_text())
