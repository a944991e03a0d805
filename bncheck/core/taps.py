"""A tap sink: per-layer accumulators fed by a backend, remembering execution order."""

from __future__ import annotations

import numpy as np

from bncheck.core.moments import LayerAccumulator


class TapCollector:
    """Callable handed to ``Model.run`` as ``on_tap``."""

    def __init__(self) -> None:
        self.acc: dict[str, LayerAccumulator] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # per-sample input shape, by layer

    def __call__(self, name: str, x: np.ndarray) -> None:
        """Add one batch of layer ``name``'s input."""
        self.acc.setdefault(name, LayerAccumulator()).update(x)
        self.shapes[name] = tuple(x.shape[1:])

    @property
    def order(self) -> list[str]:
        """Layer names in the order the data first reached them (execution order)."""
        return list(self.acc)
