"""A tap sink: per-layer accumulators fed by a backend, remembering execution order."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bncheck.core.model import TapSummary
from bncheck.core.moments import LayerAccumulator, Spread


class TapCollector:
    """Callable handed to ``Model.run`` as ``on_tap``.

    ``centers`` (a layer's running mean, by name) make the layers named there keep their
    sample-to-sample spread as well (``Spread``), which the batch-size estimate needs.
    """

    def __init__(self, centers: Mapping[str, np.ndarray] | None = None) -> None:
        self.acc: dict[str, LayerAccumulator] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # per-sample input shape, by layer
        self.centers = dict(centers or {})

    def empty(self) -> TapCollector:
        """A new collector that keeps what this one keeps (one batch of another process)."""
        return TapCollector(self.centers)

    def _acc(self, name: str) -> LayerAccumulator:
        if name not in self.acc:
            center = self.centers.get(name)
            self.acc[name] = LayerAccumulator(spread=None if center is None else Spread(center))
        return self.acc[name]

    def __call__(self, name: str, summary: TapSummary) -> None:
        """Add one batch of layer ``name``'s input."""
        self._acc(name).add(summary.mean, summary.m2, math.prod(summary.shape[1:]))
        self.shapes[name] = summary.shape

    def merge(self, other: TapCollector) -> None:
        """Fold in what another process's collector saw (its share of the batches)."""
        for name, acc in other.acc.items():
            self._acc(name).merge(acc)
        self.shapes.update(other.shapes)

    @property
    def order(self) -> list[str]:
        """Layer names in the order the data first reached them (execution order)."""
        return list(self.acc)
