"""Real architectures for ``--arch tests.support.real_archs:FACTORY``, built with no download.

Each factory returns an untrained network; ``calibrated`` gives one real BatchNorm statistics by
running it in train mode over crops of sklearn's two photos, as a training loop would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tests.support import tv_shim

tv_shim.install()

import timm  # noqa: E402  (needs the shim first)
import torchvision.models as tvm  # noqa: E402

NUM_CLASSES = 10


def timm_effnet() -> nn.Module:
    """timm efficientnet_b0: 49 BatchNormAct2d layers (BN + SiLU in one module)."""
    torch.manual_seed(0)
    return timm.create_model("efficientnet_b0", num_classes=NUM_CLASSES)


def timm_mobilenet() -> nn.Module:
    """timm mobilenetv3_small_100: BatchNormAct2d with hard-swish and ReLU."""
    torch.manual_seed(0)
    return timm.create_model("mobilenetv3_small_100", num_classes=NUM_CLASSES)


def tv_mobilenet() -> nn.Module:
    """torchvision mobilenet_v3_small: at 32x32 its last BatchNorm sees 1x1 maps."""
    torch.manual_seed(0)
    return tvm.mobilenet_v3_small(num_classes=NUM_CLASSES)


def tv_resnet18() -> nn.Module:
    """torchvision resnet18."""
    torch.manual_seed(0)
    return tvm.resnet18(num_classes=NUM_CLASSES)


def photo_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random ``size``x``size`` RGB crops of sklearn's photos, ImageNet-normalized."""
    from sklearn.datasets import load_sample_images

    images = [im.astype(np.float32) / 255.0 for im in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        im = images[i % len(images)]
        # Crops of 2-4x the output size, subsampled: varied scale, as in training.
        span = int(rng.integers(2 * size, 4 * size))
        y, x = rng.integers(0, im.shape[0] - span), rng.integers(0, im.shape[1] - span)
        step = span // size
        crop = im[y:y + step * size:step, x:x + step * size:step]
        out[i] = crop.transpose(2, 0, 1)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    return (out - mean) / std


def calibrated(model: nn.Module, crops: np.ndarray, batch_size: int = 16) -> nn.Module:
    """Running statistics gathered in train mode (cumulative average), as a trained model has."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(crops) - batch_size + 1, batch_size):
            model(torch.from_numpy(crops[i:i + batch_size]))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return model.eval()


def tv_shufflenet() -> nn.Module:
    """torchvision shufflenet_v2_x0_5: at 64x64 its per-sample statistics amplify rounding."""
    torch.manual_seed(0)
    return tvm.shufflenet_v2_x0_5(num_classes=NUM_CLASSES)
