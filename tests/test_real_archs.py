"""Real architectures built from code (timm, torchvision), with statistics gathered on photo crops.

Every written model is checked here against the original network computed with plain torch, so a
rewrite that loses part of a layer (timm's BatchNormAct2d applies an activation after its BN)
cannot pass by agreeing with itself.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli
from torch import nn

from tests.support import real_archs as ra

ARCH = "tests.support.real_archs:"


class Built:
    """A calibrated network, its state_dict on disk, and sample crops."""

    def __init__(self, root: Path, factory: str, size: int) -> None:
        crops = ra.photo_crops(96, size, seed=1)
        self.net = ra.calibrated(getattr(ra, factory)(), crops)
        self.factory = factory
        self.weights = root / f"{factory}.pth"
        torch.save(self.net.state_dict(), self.weights)
        self.x = crops[:48]
        self.data = root / f"{factory}_x.npy"
        np.save(self.data, self.x)

    def args(self) -> tuple[str, ...]:
        """MODEL --arch --data, as a user types them."""
        return (str(self.weights), "--arch", ARCH + self.factory, "--data", str(self.data))


@pytest.fixture(scope="module")
def effnet(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """timm efficientnet_b0 at 64x64: 49 BatchNormAct2d layers."""
    return Built(tmp_path_factory.mktemp("effnet"), "timm_effnet", 64)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """torchvision mobilenet_v3_small at 32x32: its last BatchNorm sees 1x1 maps."""
    return Built(tmp_path_factory.mktemp("mnv3"), "tv_mobilenet", 32)


def _ort(path: Path, x: np.ndarray, batch: int) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def _train_mode(net: nn.Module) -> nn.Module:
    """The network as trained: BN on batch statistics, running stats left alone."""
    net = copy.deepcopy(net).eval()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.track_running_stats = False
    return net


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _torch(net: nn.Module, x: np.ndarray, batch: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(x[i:i + batch])).numpy()
                               for i in range(0, len(x), batch)])


def test_timm_compare_matches_its_own_export(effnet: Built, tmp_path: Path) -> None:
    # The same weights, once as state_dict + --arch (BatchNormAct2d modules) and once as a
    # torch.export program (BN nodes, SiLU separate), must measure the same network.
    pt2 = tmp_path / "effnet.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(effnet.net.eval(), (torch.from_numpy(effnet.x[:2]),),
                             dynamic_shapes=({0: batch},))
    torch.export.save(ep, pt2)
    docs = []
    for model in (["--arch", ARCH + effnet.factory, str(effnet.weights)], [str(pt2)]):
        r = cli("compare", *model, "--data", effnet.data, "--format", "json",
                "--train-batch-size", "16")
        assert r.code in (0, 1), r.err
        docs.append(r.json())
    a, b = docs
    assert a["verdict"] == b["verdict"]
    assert a["candidates"]["eval"]["mean"] == pytest.approx(b["candidates"]["eval"]["mean"], rel=1e-3)
    assert a["noise_floor"]["mean"] == pytest.approx(b["noise_floor"]["mean"], rel=1e-3)


@pytest.mark.parametrize("mode", ["fold", "instance-norm", "batch-stats", "recalibrate"])
def test_timm_rewrites_equal_the_real_network(effnet: Built, tmp_path: Path, mode: str) -> None:
    out = tmp_path / f"{mode}.onnx"
    r = cli("rewrite", *effnet.args(), "--mode", mode, "-o", out, "--train-batch-size", "16")
    assert r.code == 0, r.out + r.err
    x = effnet.x[:16]
    if mode == "fold":
        got, want = _ort(out, x, 16), _torch(effnet.net.eval(), x, 16)
        assert _rel(got, want) < 1e-4
    elif mode == "instance-norm":
        got = _ort(out, x, 16)
        # Per-sample statistics: the network in train mode, one sample at a time.
        want = _torch(_train_mode(effnet.net), x, 1)
        assert _rel(got, want) < 1e-2  # 2x2 maps amplify float32 rounding; a lost SiLU is ~1
        assert _rel(_ort(out, x[:1], 1), got[:1]) < 1e-2
    elif mode == "batch-stats":
        got, want = _ort(out, x, 16), _torch(_train_mode(effnet.net), x, 16)
        assert _rel(got, want) < 1e-4
    else:
        got = _ort(out, x, 16)
        assert np.isfinite(got).all()
        assert "running stats equal the population statistics" in r.out


def test_a_lost_activation_is_far_outside_these_tolerances(effnet: Built) -> None:
    # What the old whole-module replacement produced: BatchNormAct2d without its SiLU.
    broken = copy.deepcopy(effnet.net).eval()
    for m in broken.modules():
        if hasattr(m, "act") and isinstance(m, nn.BatchNorm2d):
            m.act = nn.Identity()
    x = effnet.x[:16]
    assert _rel(_torch(broken, x, 16), _torch(effnet.net.eval(), x, 16)) > 0.1


def test_small_maps_rule_out_per_sample_statistics(mobilenet: Built, tmp_path: Path) -> None:
    r = cli("compare", *mobilenet.args(), "--format", "json")
    assert r.code in (0, 1), r.err
    doc = r.json()
    assert doc["verdict"] in ("ok", "mismatch", "inconclusive")
    # 1x1 maps cannot train at batch size 1, so the estimate never says so.
    assert doc["train_batch_size"]["value"] >= 2
    out = tmp_path / "in.onnx"
    r = cli("rewrite", *mobilenet.args(), "--mode", "instance-norm", "-o", out)
    assert r.code == 0, r.out + r.err
    assert "1x1 maps" in r.out and "kept on running stats" in r.out
    got = _ort(out, mobilenet.x[:8], 8)
    alone = _ort(out, mobilenet.x[:1], 1)
    assert _rel(alone, got[:1]) < 1e-3


@pytest.mark.parametrize("mode", ["fold", "batch-stats", "recalibrate"])
def test_mobilenet_rewrites(mobilenet: Built, tmp_path: Path, mode: str) -> None:
    out = tmp_path / f"{mode}.onnx"
    r = cli("rewrite", *mobilenet.args(), "--mode", mode, "-o", out)
    assert r.code == 0, r.out + r.err


def test_rounding_does_not_refuse_a_correct_instance_norm(tmp_path_factory: pytest.TempPathFactory
                                                          ) -> None:
    # shufflenet_v2 at 64x64 normalizes 2x2 maps per sample: float32 rounding is amplified
    # a thousandfold (in float64 the same comparison agrees exactly), so a fixed tolerance of
    # 1e-4 refused this correct rewrite. The check now measures the network's own rounding.
    built = Built(tmp_path_factory.mktemp("shuffle"), "tv_shufflenet", 64)
    out = built.weights.with_name("in.onnx")
    r = cli("rewrite", *built.args(), "--mode", "instance-norm", "-o", out)
    assert r.code == 0, r.out + r.err
    got = _ort(out, built.x[:16], 16)
    want = _torch(_train_mode(built.net), built.x[:16], 1)
    assert _rel(got, want) < 1e-2


def test_contrast_shift_on_resnet18_is_reported_per_layer(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    # The trial's case: a net whose output is dominated by batch noise, fed contrast-shifted
    # photos. Whatever the output verdict, the first layer's finding is in the text and the JSON.
    built = Built(tmp_path_factory.mktemp("r18"), "tv_resnet18", 32)
    shifted = built.data.with_name("shifted.npy")
    np.save(shifted, (built.x * 0.4 + 0.55).astype(np.float32))
    args = (str(built.weights), "--arch", ARCH + built.factory, "--data", str(shifted))
    doc = cli("compare", *args, "--format", "json").json()
    found = [f for f in doc["findings"] if f["code"] == "stats-divergence"]
    assert any(f["layer"] == "bn1" for f in found), doc["findings"]
    text = cli("compare", *args).out
    assert "bn1: running stats diverge" in text.replace("\n", " ")
    header = text.splitlines()[0]
    assert "no findings" not in header


def test_a_norm_bncheck_does_not_model_is_named_not_passed() -> None:
    """timm's EvoNorm2dB0 divides by the batch variance in training and by a stored running
    variance in eval. bncheck cannot measure that gap: inspect names it in one error and still
    lists the model's BatchNorm; compare and rewrite refuse in one sentence, never `ok`."""
    from timm.layers import EvoNorm2dB0

    from bncheck import api
    from bncheck.errors import BncheckError

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), EvoNorm2dB0(8), nn.Conv2d(8, 8, 3),
                        nn.BatchNorm2d(8)).eval()
    report = api.inspect(net)
    assert [layer.name for layer in report.layers] == ["3"]
    hidden = [f for f in report.findings if f.code == "hidden-norm"]
    assert len(hidden) == 1 and "EvoNorm2dB0; the first is 1" in hidden[0].message
    x = np.random.default_rng(0).normal(size=(64, 3, 16, 16)).astype(np.float32)
    for run in (lambda: api.compare(net, x), lambda: api.rewrite(net, "fold", data=x)):
        with pytest.raises(BncheckError, match="EvoNorm2dB0"):
            run()
