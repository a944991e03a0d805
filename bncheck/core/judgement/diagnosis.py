"""Per-layer divergence between a layer's running statistics and what it is given in training."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bncheck.core.network.layers import Family, NormLayer
from bncheck.core.network.moments import LayerAccumulator
from bncheck.core.network.numerics import DEFAULT_EPS

# Expected KL (nats, mean over channels) at which a layer's running stats stop standing in for
# its training-time batch statistics.
KL_WARN = 0.1
KL_ERROR = 0.5
WORST = 3


@dataclass(frozen=True)
class LayerDivergence:
    """How far running stats are from the statistics a layer is given, under one propagation."""

    mean_shift: float  # mean over channels of |mu - running_mean| / running_std
    max_mean_shift: float
    log_var_ratio: float  # mean over channels of log(var_given / running_var)
    kl: float  # expected Gaussian KL(given || running), mean over channels
    worst_channels: list[tuple[int, float]]

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {
            "mean_shift": self.mean_shift, "max_mean_shift": self.max_mean_shift,
            "log_var_ratio": self.log_var_ratio, "kl": self.kl,
            "worst_channels": [{"channel": c, "kl": k} for c, k in self.worst_channels],
        }


def divergence(layer: NormLayer, acc: LayerAccumulator, batch_size: int) -> LayerDivergence:
    """Expected divergence over training batches of ``batch_size`` drawn from the samples.

    A batch of B samples has mean ~ N(mu, between/B) and variance ~ within + (1 - 1/B) between;
    the KL of N(batch mean, batch var) from N(running mean, running var) is averaged over that
    spread, so a model trained on per-sample statistics (B = 1) shows up even when its running
    averages equal the population averages. InstanceNorm layers normalize per sample (B = 1).
    """
    assert layer.running_mean is not None and layer.running_var is not None
    b = 1 if layer.family is Family.INSTANCE else batch_size
    eps = layer.eps if layer.eps is not None else DEFAULT_EPS
    rm, rv = layer.running_mean, np.maximum(layer.running_var, 0.0) + eps
    mu = acc.population.mean
    assert mu is not None
    given = acc.expected_batch_var(b) + eps
    spread = acc.between_var / b
    d = mu - rm
    with np.errstate(all="ignore"):
        kl = 0.5 * (np.log(rv / given) + (given + d * d + spread) / rv - 1.0)
        kl = np.where(np.isfinite(kl), kl, np.inf)
        shift = np.abs(d) / np.sqrt(rv)
        lvr = np.log(given / rv)
    worst = np.argsort(-kl)[:WORST]
    return LayerDivergence(
        mean_shift=_finite_mean(shift), max_mean_shift=float(np.max(shift)) if shift.size else 0.0,
        log_var_ratio=_finite_mean(lvr), kl=_finite_mean(kl),
        worst_channels=[(int(c), float(kl[c])) for c in worst],
    )


def wrong_stats(kls: Iterable[float]) -> list[int]:
    """Positions of the layers whose running stats are wrong for what they are given in training
    (expected KL at ``KL_ERROR`` or more): evidence that no noise in the output can blur, as each
    layer's statistics pool every sample."""
    return [i for i, kl in enumerate(kls) if kl >= KL_ERROR]


def _finite_mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if np.isfinite(a).all() else float("inf")
