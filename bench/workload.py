"""The models and data every bench row runs on, built in bench/_work (ignored by git)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.common import N50, TRAIN_BS, WIDE, WORK, N
from bench.models import resnet18, resnet50, trained_stats


def build() -> dict[str, Path]:
    """Models and data for every row."""
    WORK.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.normal(0.5, 0.25, (4 * N, 3, 32, 32))).astype(np.float32)
    paths = {"x": WORK / "x.npy", "x4": WORK / "x4.npy", "x16": WORK / "x16.npy",
             "shifted": WORK / "shifted.npy",
             "r18": WORK / "r18.pt", "r18_onnx": WORK / "r18.onnx", "r50": WORK / "r50.pth",
             "r18_wide_onnx": WORK / "r18-wide.onnx",
             "r50_live": WORK / "r50.pt", "x224": WORK / "x224.npy"}
    np.save(paths["x"], x[:N])
    np.save(paths["x4"], x)
    # Its own generator: the data of every other row stays as it was.
    x16 = np.random.default_rng(16).normal(0.5, 0.25, (16 * N, 3, 32, 32)).astype(np.float32)
    np.save(paths["x16"], x16)
    np.save(paths["shifted"], x[:N] * 0.5 + 0.4)
    r18 = trained_stats(resnet18(), torch.from_numpy(x[:4 * TRAIN_BS]), steps=4)
    torch.save(r18, paths["r18"])
    import onnx

    from bncheck.backends.pytorch.export import to_onnx_proto

    onnx.save(to_onnx_proto(r18, [torch.from_numpy(x[:2])], ["input"]), paths["r18_onnx"])
    # ResNet-18's own widths (64 to 512 channels), four times the convolution work per sample.
    wide = trained_stats(resnet18(WIDE), torch.from_numpy(x[:4 * TRAIN_BS]), steps=4)
    onnx.save(to_onnx_proto(wide, [torch.from_numpy(x[:2])], ["input"]), paths["r18_wide_onnx"])
    if not paths["r50"].exists():
        r50 = resnet50()
        torch.save({"epoch": 90, "state_dict": r50.state_dict()}, paths["r50"])
    if not paths["r50_live"].exists():
        x224 = rng.normal(0.0, 1.0, (N50, 3, 224, 224)).astype(np.float32)
        np.save(paths["x224"], x224)
        torch.save(trained_stats(resnet50(), torch.from_numpy(x224), steps=6), paths["r50_live"])
    return paths
