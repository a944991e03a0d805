"""A tap sink: per-layer accumulators fed by a backend, remembering execution order."""

from __future__ import annotations

import numpy as np

from bncheck.core.moments import LayerAccumulator


class TapCollector:
    """Callable handed to ``Model.run`` as ``on_tap``."""

    def __init__(self) -> None:
        self.acc: dict[str, LayerAccumulator] = {}
        self.order: list[str] = []

    def __call__(self, name: str, x: np.ndarray) -> None:
        """Add one batch of layer ``name``'s input."""
        if name not in self.acc:
            self.acc[name] = LayerAccumulator()
            self.order.append(name)
        self.acc[name].update(x)
