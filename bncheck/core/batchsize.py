"""Estimating the training batch size from running_var and the sample data (docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from bncheck.core.layers import NormLayer
from bncheck.core.moments import LayerAccumulator
from bncheck.core.numerics import TINY

DEFAULT_BATCH = 32
# Running stats describe the data only if their means are within this many running std.
MAX_MEAN_SHIFT = 0.5
# ... and the fitted running_var is within this relative error.
MAX_FIT_ERROR = 0.25
# The batch size changes a layer's batch variance by at most the between-sample variance; below
# this share of running_var it drowns in the noise of the running average.
MIN_BETWEEN_SHARE = 0.05
LAYERS_TRIED = 3
# Fit errors below this are no more informative (the running average itself is that noisy).
MIN_FIT_ERROR = 0.01


class BatchSizeSource(StrEnum):
    """Where the training batch size came from."""

    OPTION = "option"  # --train-batch-size
    ESTIMATED = "estimated"  # fitted to running_var
    ASSUMED = "assumed"  # could not be fitted; a default
    UNUSED = "unused"  # nothing depends on the batch


@dataclass(frozen=True)
class BatchSizeEstimate:
    """The training batch size used for the reference, and how it was obtained."""

    value: int
    source: BatchSizeSource
    detail: str

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"value": self.value, "source": self.source.value, "detail": self.detail}


def estimate_batch_size(first_layers: list[tuple[NormLayer, LayerAccumulator]], n_samples: int,
                        min_batch: int = 1) -> BatchSizeEstimate:
    """Fit ``running_var ~ within + (1 - 1/B) * between`` at the layers nearest the input.

    Only the first layers are used: there eval and training propagation still agree. A layer
    whose running stats do not describe the data (shifted domain, stats never updated) ends the
    search; a layer whose per-sample means barely vary cannot tell batch sizes apart and is
    skipped. ``min_batch`` is 2 when some BN layer has no spatial dims (B = 1 cannot train).
    """
    fallback = max(min_batch, min(DEFAULT_BATCH, n_samples))
    reasons = []
    fits: list[tuple[str, float, float]] = []  # layer, 1/B, weight
    for layer, acc in first_layers[:LAYERS_TRIED]:
        if acc.spatial <= 1:
            continue
        fit = _fit(layer, acc)
        if isinstance(fit, _Misfit):
            reasons.append(fit.reason)
            if fit.ends_search:
                break
            continue
        inv_b, err, share = fit
        # How well a layer pins 1/B: the batch size moves running_var by (1/B) * between, so
        # the fit's relative error divided by the between-sample share is the error of 1/B.
        fits.append((layer.name, inv_b, (share / max(err, MIN_FIT_ERROR)) ** 2))
    if fits:
        inv_b = sum(f[1] * f[2] for f in fits) / sum(f[2] for f in fits)
        value = round(1.0 / inv_b) if inv_b > 0 else n_samples
        value = max(min_batch, min(value, n_samples))
        names = ", ".join(f"{name} ({b:.3f})" for name, b, _ in fits)
        return BatchSizeEstimate(value, BatchSizeSource.ESTIMATED,
                                 f"from running_var: 1/B = {inv_b:.3f}, weighted over {names}")
    why = "; ".join(reasons) if reasons else "no layer near the input has spatial dims"
    return BatchSizeEstimate(fallback, BatchSizeSource.ASSUMED, f"{why}; assumed {fallback} "
                             "(give --train-batch-size to set it)")


@dataclass(frozen=True)
class _Misfit:
    """Why a layer gives no estimate, and whether deeper layers can still be trusted."""

    reason: str
    ends_search: bool = False


def _fit(layer: NormLayer, acc: LayerAccumulator) -> tuple[float, float, float] | _Misfit:
    """(1/B, median relative fit error, median between-sample share of running_var)."""
    assert layer.running_mean is not None and layer.running_var is not None
    rv, rm = layer.running_var, layer.running_mean
    mu = acc.population.mean
    assert mu is not None
    total, between, within = acc.population.var, acc.between_var, acc.within_var
    with np.errstate(all="ignore"):
        shift = np.abs(mu - rm) / np.sqrt(np.maximum(rv, TINY))
    if not np.isfinite(shift).all() or not np.isfinite(rv).all():
        return _Misfit(f"running stats of {layer.name} are not finite")
    if float(np.median(shift)) > MAX_MEAN_SHIFT:
        # Layers after one whose stats do not describe the data see other inputs in training.
        return _Misfit(f"running stats of {layer.name} do not describe the sample data (median "
                       f"mean shift {float(np.median(shift)):.2f} running std)", ends_search=True)
    share = between / np.maximum(rv, TINY)
    if float(np.median(share)) < MIN_BETWEEN_SHARE:
        return _Misfit(f"per-sample means at {layer.name} barely vary "
                       f"({100 * float(np.median(share)):.1f}% of the variance), so the batch size "
                       "cannot be read from it")
    bt, gap = between, total - rv
    inv_b = float(np.clip(np.sum(bt * gap) / np.sum(bt * bt), 0.0, 1.0))
    fitted = within + (1.0 - inv_b) * between
    err = float(np.median(np.abs(fitted - rv) / np.maximum(rv, TINY)))
    if err > MAX_FIT_ERROR:
        return _Misfit(f"running_var of {layer.name} fits no batch size (median relative error "
                       f"{err:.2f})")
    return inv_b, err, float(np.median(share))
