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
