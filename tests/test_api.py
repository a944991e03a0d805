"""The Python API on live objects: a module trained here at batch size 1, data as a DataLoader."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, ROOT, model_path
from torch.utils.data import DataLoader, TensorDataset

import bncheck
from bncheck.core.judgement.verdict import Diagnosis, FixMode, VerdictKind
from fixtures.archs import PixNet

STEPS = 150


@pytest.fixture(scope="module")
def bs1_module() -> torch.nn.Module:
    """A small U-Net trained at batch size 1 on the pix2pix-like pairs."""
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(DATA / "pix_inputs.npy"))
    y = torch.from_numpy(np.load(DATA / "pix_targets.npy"))
    net = PixNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for step in range(STEPS):
        i = step % len(x)
        loss = torch.nn.functional.l1_loss(net(x[i:i + 1]), y[i:i + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _loader(shuffle: bool = False) -> DataLoader:  # type: ignore[type-arg]
    x = torch.from_numpy(np.load(DATA / "pix_inputs.npy"))
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=8, shuffle=shuffle)


def test_compare_a_live_module_on_a_loader(bs1_module: torch.nn.Module) -> None:
    before = copy.deepcopy(bs1_module.state_dict())
    result = bncheck.compare(bs1_module, _loader())
    assert isinstance(result, bncheck.Comparison)
    v = result.verdict
    assert v.verdict is VerdictKind.MISMATCH and v.diagnosis is Diagnosis.INTERNAL
    assert v.mode is FixMode.INSTANCE_NORM
    assert result.measurements.train_batch.value == 1
    doc = result.to_json()
    assert doc["verdict"] == "mismatch" and doc["recommendation"]["mode"] == "instance-norm"
    # The user's module is untouched: same weights, same running stats, still in eval mode.
    assert not bs1_module.training
    assert all(torch.equal(before[k], v) for k, v in bs1_module.state_dict().items())


def test_data_forms_agree(bs1_module: torch.nn.Module) -> None:
    x = np.load(DATA / "pix_inputs.npy")
    by_path = bncheck.compare(bs1_module, DATA / "pix_inputs.npy").measurements
    for data in (x, torch.from_numpy(x), TensorDataset(torch.from_numpy(x)), _loader(),
                 [torch.from_numpy(x[i:i + 16]) for i in range(0, len(x), 16)]):
        m = bncheck.compare(bs1_module, data).measurements
        assert m.candidates["eval"].mean == pytest.approx(by_path.candidates["eval"].mean,
                                                          rel=1e-6), type(data)


def test_rewrite_a_live_module_and_save(bs1_module: torch.nn.Module, tmp_path: Path) -> None:
    fixed = bncheck.rewrite(bs1_module, "instance-norm", data=_loader())
    x = torch.from_numpy(np.load(DATA / "pix_inputs.npy"))
    # In memory: per-sample statistics, so a sample's output does not depend on its batch-mates.
    with torch.no_grad():
        together = fixed.module(x[:8])
        alone = torch.cat([fixed.module(x[i:i + 1]) for i in range(8)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    report = fixed.save(tmp_path / "fixed.onnx")
    assert report.ok and report.written and (tmp_path / "fixed.onnx").exists()
    with pytest.raises(bncheck.BncheckError, match="already exists"):
        fixed.save(tmp_path / "fixed.onnx")


def test_recalibrate_is_update_bn_done_exactly(tmp_path: Path) -> None:
    net = torch.load(model_path("digits", "full"), weights_only=False).eval()
    shifted = torch.from_numpy(np.load(DATA / "digits_shifted.npy"))
    before = copy.deepcopy(net.state_dict())
    new = bncheck.recalibrate(net, shifted, train_batch_size=32)
    assert new is not net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # Exact population statistics of the first BN's input (its conv's output), in float64.
    with torch.no_grad():
        conv = net.features[0](shifted).double()
    want = conv.transpose(0, 1).reshape(8, -1)
    torch.testing.assert_close(new.features[1].running_mean.double(), want.mean(1),
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(new.features[1].running_var.double(), want.var(1), rtol=1e-6,
                               atol=1e-7)
    labels = np.load(DATA / "digits_y.npy")
    with torch.no_grad():
        acc = float((new.eval()(shifted).argmax(1).numpy() == labels).mean())
    assert acc > 0.95


def test_inspect_and_onnx_proto() -> None:
    import onnx

    proto = onnx.load(model_path("pix_bs1", "onnx"))
    r = bncheck.inspect(proto)
    assert [layer.name for layer in r.layers][:2] == ["enc1.1", "enc2.1"]
    fixed = bncheck.rewrite(proto, "fold", data=DATA / "pix_inputs.npy")
    assert not any(n.op_type == "BatchNormalization" for n in fixed.proto.graph.node)


def test_fresh_interpreter() -> None:
    code = (
        "import numpy as np, torch, bncheck\n"
        "from fixtures.archs import DigitsNet\n"
        "from torch.utils.data import DataLoader\n"
        "net = DigitsNet().eval()\n"
        "x = torch.from_numpy(np.load('fixtures/data/digits_x.npy'))\n"
        "r = bncheck.compare(net, DataLoader(x, batch_size=32))\n"
        "print(r.verdict.verdict.value)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    # Never-updated stats (mean 0, var 1): not ok.
    assert p.stdout.strip() in ("mismatch", "inconclusive")
