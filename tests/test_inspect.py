"""inspect: every data-free finding on its fixture, exit codes, JSON, golden text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA, ROOT, cli, model_path


def _codes(path: Path, *extra: str) -> dict[str, set[str]]:
    r = cli("inspect", path, "--format", "json", *extra)
    out: dict[str, set[str]] = {}
    for f in r.json()["findings"]:
        out.setdefault(f["code"], set()).add(f["layer"])
    return out


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "checkpoint"])
def test_corrupt_stats(fmt: str) -> None:
    codes = _codes(model_path("digits_corrupt", fmt))
    assert codes["nonfinite"] == {"features.1"}
    assert codes["negative-var"] == {"features.4"}


def test_corrupt_exits_1_and_healthy_exits_0() -> None:
    assert cli("inspect", model_path("digits_corrupt", "onnx")).code == 1
    assert cli("inspect", model_path("digits", "onnx")).code == 0
    assert cli("inspect", model_path("digits", "onnx"), "--fail-on", "warn").code == 0


def test_momentum_zero_stats_at_init() -> None:
    codes = _codes(model_path("digits_m0", "onnx"))
    assert codes["stats-at-init"] == {"features.1", "features.4", "head.2"}
    assert codes["momentum-zero"] == {"features.1", "features.4", "head.2"}
    r = cli("inspect", model_path("digits_m0", "onnx"), "--fail-on", "warn")
    assert r.code == 1


def test_eps_bug() -> None:
    codes = _codes(model_path("digits_eps", "full"), "--allow-pickle")
    assert codes["unusual-eps"] == {"features.1", "features.4", "head.2"}


def test_healthy_model_has_no_warnings() -> None:
    for fmt in ("onnx", "pt2", "torchscript"):
        codes = _codes(model_path("digits", fmt))
        assert not codes, codes


def test_track_running_stats_false_and_instance_norm_with_stats(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, track_running_stats=False),
                                torch.nn.InstanceNorm2d(4, track_running_stats=True),
                                torch.nn.BatchNorm2d(4, momentum=0.9))
    path = tmp_path / "m.pt"
    torch.save(model, path)
    codes = _codes(path, "--allow-pickle")
    assert codes["no-running-stats"] == {"1"}
    assert codes["instance-norm-running-stats"] == {"2"}
    assert codes["unusual-momentum"] == {"3"}
    assert codes["stats-at-init"] == {"2", "3"}


def test_small_variance_and_dead_channels(tmp_path: Path) -> None:
    bn = torch.nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.fill_(1.0)
        bn.running_var[:3] = 1e-9
        bn.weight[:2] = 0.0
    path = tmp_path / "bn.pt"
    torch.save({"bn": bn.state_dict()}, path)  # nested under an unusual key
    r = cli("inspect", path, "--format", "json")
    msgs = {f["code"]: f["message"] for f in r.json()["findings"]}
    assert "2 of 8 channels are dead" in msgs["dead-channels"]
    assert "in 1 of 8 channels" in msgs["eps-dominates"]


def test_onnx_with_bn_folded_by_the_torchscript_exporter_is_never_ok() -> None:
    # The exporter gave the Conv it fused with a BatchNorm a new weight and bias: a trace.
    r = cli("inspect", ROOT / "tests" / "data" / "folded.onnx", "--format", "json")
    assert r.code == 1
    (f,) = r.json()["findings"]
    assert f["code"] == "hidden-norm" and f["severity"] == "error"
    assert "do_constant_folding=False" in f["message"] and "/0/Conv" in f["message"]
    r = cli("compare", ROOT / "tests" / "data" / "folded.onnx", "--data", DATA / "digits_x.npy")
    assert r.code == 2 and "folded BatchNorm" in r.err and "Traceback" not in r.err


def test_onnx_without_norm_layers_or_a_trace_of_them_warns(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    path = tmp_path / "plain.onnx"
    torch.onnx.export(net.eval(), (torch.zeros(1, 1, 8, 8),), path, dynamo=False)
    r = cli("inspect", path, "--format", "json")
    assert r.code == 0
    (f,) = r.json()["findings"]
    assert f["code"] == "no-norm-layers" and f["severity"] == "warn"
    assert "do_constant_folding=False" in f["message"]  # the TorchScript exporter wrote it


def test_json_is_the_only_thing_on_stdout() -> None:
    r = cli("inspect", model_path("pix_bs1", "onnx"), "--format", "json")
    doc = r.json()
    assert [layer["name"] for layer in doc["layers"]] == ["enc1.1", "enc2.1", "enc3.1", "dec3.1", "dec2.1"]
    assert all({"name", "kind"} <= set(layer) for layer in doc["layers"])


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          check=False)


def test_help_and_onnx_inspect_never_import_torch() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bncheck.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0\n"
        "r = CliRunner().invoke(app, ['inspect', 'fixtures/models/digits.onnx'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    p = _fresh(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"
