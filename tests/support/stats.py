"""The tap summary of an array, computed plainly in float64: what every backend must match."""

from __future__ import annotations

import numpy as np

from bncheck.core.network.moments import LayerAccumulator, SampleRows


def accumulate(*batches: np.ndarray, rows: bool = False) -> LayerAccumulator:
    """A LayerAccumulator fed whole (N, C, *spatial) batches, reduced here in float64; with
    ``rows`` it keeps per-sample rows too, as the eval pass does for the first layers."""
    acc = LayerAccumulator(rows=SampleRows() if rows else None)
    for x in batches:
        xs = x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1)
        mean = xs.mean(axis=2)
        m2 = ((xs - mean[:, :, None]) ** 2).sum(axis=2)
        acc.add(mean, m2, xs.shape[2])
    return acc
