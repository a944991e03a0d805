"""``pip install bncheck`` without extras, in a real virtual environment built from the checkout.

The base install reads and fixes ONNX models. Every other format and every flag that needs an
extra must end in one sentence naming the extra to install (exit 2), never in a
ModuleNotFoundError: an import blocker in-process cannot show what a separate environment
without torch, Keras, TensorFlow or matplotlib really does, so this builds one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, MODELS, ROOT, model_path

ONNX = model_path("digits", "onnx")
X = DATA / "digits_x.npy"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bncheck console script of a fresh venv holding bncheck and its base requirements."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)],
                   check=True, capture_output=True)
    missing = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib.util as u; print([m for m in ('torch', 'keras', "
                              "'tensorflow', 'matplotlib', 'safetensors', 'h5py') "
                              "if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert missing.stdout.strip() == "[]", missing.stdout  # really the base install
    return venv / "bin" / "bncheck"


def _run(base: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(base), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


# (arguments, the extra the sentence must name)
NEEDS_AN_EXTRA = {
    "inspect .pth": (("inspect", model_path("digits", "checkpoint")), "torch"),
    "inspect .safetensors": (("inspect", model_path("digits", "safetensors")), "torch"),
    "inspect .pt2": (("inspect", model_path("digits", "pt2")), "torch"),
    "inspect TorchScript": (("inspect", model_path("digits", "torchscript")), "torch"),
    "inspect pickled module": (("inspect", model_path("digits", "full"), "--allow-pickle"),
                               "torch"),
    "inspect .keras": (("inspect", MODELS / "keras_digits.keras"), "keras"),
    "inspect .h5": (("inspect", MODELS / "keras_unet_bs1.h5"), "keras"),
    "inspect .pb": (("inspect", MODELS / "tf_pix2pix.pb"), "tensorflow"),
    "inspect SavedModel": (("inspect", MODELS / "keras_unet_bs1_export"), "tensorflow"),
    "compare --plot": (("compare", ONNX, "--data", X, "--plot", "p.png"), "plot"),
    "compare --nproc-per-node": (("compare", ONNX, "--data", X, "--nproc-per-node", "2"),
                                 "torch"),
    "rewrite --nproc-per-node": (("rewrite", ONNX, "--mode", "fold", "-o", "f.onnx",
                                  "--nproc-per-node", "2"), "torch"),
    "compare --data .pt": (("compare", ONNX, "--data", "x.pt"), "torch"),
}


def test_every_format_and_flag_that_needs_an_extra_names_it(base: Path, tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"PK\x03\x04 a torch.save'd tensor, as far as its name says")
    failures = []
    for case, (args, extra) in NEEDS_AN_EXTRA.items():
        r = _run(base, *args, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        if not (r.returncode == 2 and len(lines) == 1 and f"pip install 'bncheck[{extra}]'"
                in lines[0] and "Traceback" not in r.stderr):
            failures.append(f"{case}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    assert not failures, "\n".join(failures)


def test_onnx_works_on_the_base_install(base: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "y.npy", np.load(DATA / "digits_y.npy"))
    runs = {
        "inspect": (("inspect", ONNX), 0),
        "compare": (("compare", ONNX, "--data", X, "--format", "json"), 0),
        "compare --labels": (("compare", ONNX, "--data", X, "--labels", "y.npy"), 0),
        "compare --workers": (("compare", ONNX, "--data", X, "--workers", "2"), 0),
        "compare images": (("compare", ONNX, "--data", DATA / "digits_png", "--limit", "64",
                            "--train-batch-size", "32"), None),
        "rewrite fold": (("rewrite", ONNX, "--mode", "fold", "-o", "fold.onnx"), 0),
        "rewrite recalibrate": (("rewrite", ONNX, "--mode", "recalibrate", "-o", "r.onnx",
                                 "--data", X), 0),
        "rewrite instance-norm": (("rewrite", ONNX, "--mode", "instance-norm", "-o", "i.onnx",
                                   "--data", X), None),
        "rewrite batch-stats": (("rewrite", ONNX, "--mode", "batch-stats", "-o", "b.onnx",
                                 "--data", X), None),
        "compare a hidden form": (("compare", MODELS / "pix_bs1_dynamo_opt.onnx", "--data",
                                   DATA / "pix_inputs.npy"), 2),
    }
    failures = []
    for case, (args, code) in runs.items():
        r = _run(base, *args, cwd=tmp_path)
        ok = r.returncode in ((0, 1) if code is None else (code,))
        if not ok or "Traceback" in r.stderr or "ModuleNotFoundError" in r.stderr:
            failures.append(f"{case}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    assert not failures, "\n".join(failures)
    assert (tmp_path / "fold.onnx").is_file() and (tmp_path / "r.onnx").is_file()


def test_training_integrations_name_their_extra(base: Path, tmp_path: Path) -> None:
    """The callbacks are imported, not run from the CLI: the import raises one BncheckError."""
    python = base.parent / "python"
    for module, extra in (("lightning", "lightning"), ("keras", "keras")):
        r = subprocess.run([str(python), "-c", f"import bncheck.integrations.{module}"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 1 and last.startswith("bncheck.errors.BncheckError:"), r.stderr
        assert f"pip install 'bncheck[{extra}]'" in last, last
