"""Benchmark models built in code: a ResNet-18 layout (20 BN layers) and a ResNet-50-size one."""

from __future__ import annotations

import torch
from torch import nn


class Basic(nn.Module):
    """ResNet basic block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv-bn-relu-conv-bn plus shortcut."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (expansion 4)."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """1x1-3x3-1x1 with shortcut."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """ResNet with a small stem for 32x32 inputs."""

    def __init__(self, block: str, layers: list[int], width: int, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        blocks: list[nn.Module] = []
        cin = width
        for i, n in enumerate(layers):
            w = width * 2**i
            for j in range(n):
                stride = 2 if j == 0 and i > 0 else 1
                if block == "basic":
                    blocks.append(Basic(cin, w, stride))
                    cin = w
                else:
                    blocks.append(Bottleneck(cin, w, stride))
                    cin = w * 4
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores."""
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def resnet18(width: int = 32) -> nn.Module:
    """ResNet-18 layout: 20 BatchNorm layers."""
    return ResNet("basic", [2, 2, 2, 2], width)


def resnet50() -> nn.Module:
    """ResNet-50 size: about 23.5M parameters, 53 BatchNorm layers."""
    return ResNet("bottleneck", [3, 4, 6, 3], 64, classes=1000)


def trained_stats(model: nn.Module, x: torch.Tensor, steps: int = 3) -> nn.Module:
    """Give the BN layers realistic running stats (a few train-mode passes, no weight updates)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: converged after a few passes
    model.train()
    with torch.no_grad():
        for s in range(steps):
            model(x[s::steps])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()
