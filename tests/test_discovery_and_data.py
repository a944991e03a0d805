"""Layer discovery across torch's normalization zoo, and every sample-data format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, cli, model_path
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """torchvision-style: BN buffers, no parameters, no _BatchNorm base."""

    def __init__(self, c: int) -> None:
        super().__init__()
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.5), ("running_var", 2.0)):
            self.register_buffer(name, torch.full((c,), fill))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        return x * scale[None, :, None, None] + (self.bias - self.running_mean * scale)[None, :, None, None]


class BatchNormAct2d(nn.BatchNorm2d):
    """timm-style subclass with a fused activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def test_every_torch_norm_kind_is_found(tmp_path: Path) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), BatchNormAct2d(4), nn.LazyBatchNorm2d(),
        FrozenBatchNorm2d(4), nn.InstanceNorm2d(4), nn.GroupNorm(2, 4), nn.Flatten(),
        nn.LayerNorm(4 * 6 * 6), nn.RMSNorm(4 * 6 * 6), nn.Linear(144, 8), nn.BatchNorm1d(8),
    )
    model(torch.randn(2, 3, 8, 8))  # materializes the lazy layer
    path = tmp_path / "zoo.pt"
    torch.save(model.eval(), path)
    doc = cli("inspect", path, "--allow-pickle", "--format", "json").json()
    kinds = {layer["name"]: (layer["kind"], layer["family"]) for layer in doc["layers"]}
    assert kinds == {
        "1": ("SyncBatchNorm", "batch"), "2": ("BatchNormAct2d", "batch"), "3": ("BatchNorm2d", "batch"),
        "4": ("FrozenBatchNorm2d", "batch"), "5": ("InstanceNorm2d", "instance"),
        "6": ("GroupNorm", "group"), "8": ("LayerNorm", "layer"), "9": ("RMSNorm", "rms"),
        "11": ("BatchNorm1d", "batch"),
    }
    frozen = next(layer for layer in doc["layers"] if layer["name"] == "4")
    assert frozen["momentum_note"] == "frozen" and frozen["running_var"] == [2.0, 2.0]


def test_grouped_conv_transpose_folds_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2), bn, nn.ReLU()).eval()
    path = tmp_path / "ct.pt"
    torch.save(model, path)
    x = np.random.default_rng(0).normal(size=(5, 4, 7, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "ct.onnx"
    r = cli("rewrite", path, "--allow-pickle", "--mode", "fold", "-o", out, "--data", tmp_path / "x.npy")
    assert r.code == 0 and "folded into 0" in r.out, r.out + r.err
    import onnxruntime as ort

    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_data_formats_agree(tmp_path: Path) -> None:
    x = np.load(DATA / "digits_x.npy")[:64]
    np.savez(tmp_path / "one.npz", anything=x)
    np.savez(tmp_path / "named.npz", input=x, labels=np.zeros(64))
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    np.save(tmp_path / "x.npy", x)
    docs = {}
    for name in ("x.npy", "one.npz", "named.npz", "x.pt"):
        r = cli("compare", model_path("digits", "onnx"), "--data", tmp_path / name, "--format", "json")
        assert r.code in (0, 1) and not r.err, (name, r.err)  # 64 samples: maybe inconclusive
        docs[name] = r.json()
    evals = {k: d["candidates"]["eval"]["mean"] for k, d in docs.items()}
    assert len(set(evals.values())) == 1, evals
    np.savez(tmp_path / "ambiguous.npz", a=x, b=x)
    r = cli("compare", model_path("digits", "onnx"), "--data", tmp_path / "ambiguous.npz")
    assert r.code == 2 and "input" in r.err


def test_limit_and_image_options(tmp_path: Path) -> None:
    r = cli("compare", model_path("digits", "onnx"), "--data", DATA / "digits_x.npy", "--limit", "40",
            "--format", "json")
    assert r.json()["samples"]["total"] == 40
    # Images resized up and normalized: the pipeline runs; a wrong size for a fixed graph is refused.
    r = cli("compare", model_path("digits", "pt2"), "--data", DATA / "digits_png", "--mean", "0.5",
            "--std", "0.5", "--format", "json")
    assert r.code in (0, 1), r.err
    r = cli("compare", model_path("digits", "onnx"), "--data", DATA / "digits_png", "--image-size", "16,16")
    assert r.code == 2 and "(N, 1, 8, 8)" in r.err
    r = cli("compare", model_path("digits", "onnx"), "--data", DATA / "digits_png", "--std", "0")
    assert r.code == 2 and "--std" in r.err


@pytest.mark.parametrize("bad", ["--batch-size=0", "--format=xml", "--fail-on=info"])
def test_bad_options_are_usage_errors(bad: str) -> None:
    r = cli("compare", model_path("digits", "onnx"), "--data", DATA / "digits_x.npy", bad)
    assert r.code == 2
