"""A tap sink: per-layer accumulators fed by a backend, remembering execution order."""

from __future__ import annotations

import math

from bncheck.core.model import TapSummary
from bncheck.core.moments import LayerAccumulator


class TapCollector:
    """Callable handed to ``Model.run`` as ``on_tap``."""

    def __init__(self) -> None:
        self.acc: dict[str, LayerAccumulator] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # per-sample input shape, by layer

    def __call__(self, name: str, summary: TapSummary) -> None:
        """Add one batch of layer ``name``'s input."""
        self.acc.setdefault(name, LayerAccumulator()).add(summary.mean, summary.m2,
                                                          math.prod(summary.shape[1:]))
        self.shapes[name] = summary.shape

    def merge(self, other: TapCollector) -> None:
        """Fold in what another process's collector saw (its share of the batches)."""
        for name, acc in other.acc.items():
            self.acc.setdefault(name, LayerAccumulator()).merge(acc)
        self.shapes.update(other.shapes)

    @property
    def order(self) -> list[str]:
        """Layer names in the order the data first reached them (execution order)."""
        return list(self.acc)
