"""A tap sink: per-layer accumulators fed by a backend, remembering execution order."""

from __future__ import annotations

import math

from bncheck.core.network.model import TapSummary
from bncheck.core.network.moments import LayerAccumulator, SampleRows


class TapCollector:
    """Callable handed to ``Model.run`` as ``on_tap``.

    With ``rows``, the first ``rows`` layers the data reaches keep per-sample rows as well
    (``SampleRows``): the training batch size and an input shift are read from them.
    """

    def __init__(self, rows: int = 0) -> None:
        self.acc: dict[str, LayerAccumulator] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # per-sample input shape, by layer
        self.rows = rows

    def empty(self) -> TapCollector:
        """A new collector that keeps what this one keeps (one batch of another process)."""
        return TapCollector(self.rows)

    def _acc(self, name: str) -> LayerAccumulator:
        if name not in self.acc:
            keep = len(self.acc) < self.rows
            self.acc[name] = LayerAccumulator(rows=SampleRows() if keep else None)
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
