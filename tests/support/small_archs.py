"""Small architectures for ``--arch tests.support.small_archs:FACTORY`` in the tests."""

from __future__ import annotations

import torch
from torch import nn


class Frames(nn.Module):
    """torchcrepe-like: takes (N, 1024) audio frames and reshapes them to conv maps inside."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, (64, 1), stride=(4, 1), padding=(32, 0))
        self.bn = nn.BatchNorm2d(8, momentum=0.0)
        self.head = nn.Linear(8 * 257, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frames in, 16 scores out."""
        x = torch.relu(self.bn(self.conv(x[:, None, :, None])))
        return self.head(x.flatten(1))


def frames() -> nn.Module:
    """The frame model, untrained."""
    torch.manual_seed(0)
    return Frames()


def broken() -> nn.Module:
    """A factory that fails the way user code does."""
    raise RuntimeError("weights folder not configured")


class Deep(nn.Module):
    """Long, nested layer names, as in real networks."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"stage_four_residual_block_two": nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One block."""
        return self.encoder["stage_four_residual_block_two"](x)


def deep() -> nn.Module:
    """The long-named model."""
    return Deep()


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """detectron2's NaiveSyncBatchNorm, reduced to its single-process path: a BatchNorm2d
    subclass whose forward defers to the parent (detectron2 all-reduces only across GPUs)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """One process: exactly BatchNorm2d."""
        return super().forward(input)


class FrozenBatchNorm2d(nn.Module):
    """detectron2/torchvision's FrozenBatchNorm2d: buffers only, a fixed affine map."""

    def __init__(self, n: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x * scale + shift, from the frozen statistics."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class BatchNormXd(nn.modules.batchnorm._BatchNorm):
    """mmengine's _BatchNormXd: any input rank, the parent's forward."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        """Every rank is accepted."""


class BatchNormAct(nn.BatchNorm2d):
    """An mmcv/timm-style BN with an activation applied in its own forward."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize, then activate."""
        return self.act(super().forward(x))


def subclasses() -> nn.Module:
    """One of each normalization subclass people meet, after convolutions."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), NaiveSyncBatchNorm(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), FrozenBatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), BatchNormXd(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), BatchNormAct(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


class Versioned(nn.Module):
    """Refuses weights without its state_dict version, as torchvision's MNASNet does."""

    _version = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in, maps out."""
        return torch.relu(self.bn(self.conv(x)))

    def _load_from_state_dict(self, state_dict: dict, prefix: str,  # type: ignore[type-arg]
                              local_metadata: dict, *args: object) -> None:  # type: ignore[type-arg]
        if local_metadata.get("version") != 2:
            raise ValueError(f"version should be set to 1 or 2 instead of "
                             f"{local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)  # type: ignore[arg-type]


def versioned() -> nn.Module:
    """The versioned model, untrained."""
    torch.manual_seed(0)
    return Versioned()


class ShapePadded(nn.Module):
    """Pools with a padding computed from the input's size as it runs, which torch's ONNX
    exporter can write only as a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in, pooled maps out."""
        y = torch.relu(self.bn(self.conv(x)))
        pad = (y.shape[-2] // 8, y.shape[-1] // 8)
        return nn.functional.max_pool2d(y, 3, 2, padding=pad)


def shape_padded() -> nn.Module:
    """The shape-padded model, untrained."""
    torch.manual_seed(0)
    return ShapePadded()
