"""How far one rounding step of the inputs moves a model's outputs.

Two runs on inputs one rounding step apart (seeded random signs) differ only by how the network
amplifies rounding. Verification allows a multiple of it; compare measures it for half-precision
models, whose rounding step (2^-10) can be what makes their reference noisy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bncheck.core.judgement.discrepancy import NORM_FLOOR
from bncheck.core.network.model import Model
from bncheck.core.network.numerics import TINY

SEED = 0
# float32's own rounding step: a model whose step is larger runs in half precision.
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def nudged(batch: Sequence[np.ndarray], step: float) -> list[np.ndarray]:
    """``batch`` with each floating value moved by one relative rounding ``step`` up or down."""
    rng = np.random.default_rng(SEED)
    return [a * (1 + rng.choice(np.array([-1, 1], a.dtype), a.shape) * step)
            if np.issubdtype(a.dtype, np.floating) else a for a in batch]


def is_half(model: Model) -> bool:
    """Whether the model computes in half precision."""
    return model.float_eps > 2 * FLOAT32_EPS


def half_rounding(model: Model, batch: Sequence[np.ndarray]) -> float:
    """Mean per-sample relative L2 between outputs on ``batch`` and on it nudged by one of the
    model's rounding steps: how much of a half-precision reference is rounding alone. Norms are
    floored as compare's distances are (``NORM_FLOOR`` of the median)."""
    got = model.run(nudged(batch, model.float_eps)).astype(np.float64)
    want = model.run(batch).astype(np.float64)
    norms = np.linalg.norm(want, axis=1)
    floor = max(NORM_FLOOR * float(np.median(norms)), TINY) if norms.size else TINY
    with np.errstate(all="ignore"):
        err = np.linalg.norm(got - want, axis=1) / np.maximum(norms, floor)
    return float(np.mean(err)) if err.size else 0.0
