"""Estimating the training batch size from running_var and the sample data (docs/design.md).

PyTorch's ``running_var`` is an exponential average of unbiased batch variances. At training
batch size B a batch's variance is about the within-sample variance plus ``(1 - 1/B)`` times the
variance of the per-sample means ("between"), so the layers nearest the input say which B the
running stats were averaged at. They say it only as precisely as two kinds of noise allow: the
sample data's own variance differs from the training population's (sampling noise), and the
running average itself scatters around the population (it averages few batches). Both are
measured here, per layer, from how per-sample statistics scatter (``Spread``), and every batch
size whose prediction is within ``Z_PLAUSIBLE`` standard errors of ``running_var`` is plausible.
The estimate is trusted only when the plausible sizes span at most a factor ``MAX_SPAN``; else it
is uncertain, and a verdict must not rest on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from bncheck.core.layers import MomentumNote, NormLayer
from bncheck.core.moments import LayerAccumulator, Spread
from bncheck.core.numerics import TINY

DEFAULT_BATCH = 32
# Running means further from the data's mean than this many running std (median over
# channels), and than this many times the noise they would have at the smallest batch size, do
# not describe the data: the layer and everything after it saw other inputs in training.
MAX_MEAN_SHIFT = 0.5
MAX_NOISE_RATIO = 3.0
# A running_var whose per-channel fit is off by more than this (median relative error) fits no
# batch size.
MAX_FIT_ERROR = 0.25
# The batch size changes a layer's batch variance by at most the between-sample variance; below
# this share of running_var it drowns in the noise of the running average.
MIN_BETWEEN_SHARE = 0.05
LAYERS_TRIED = 3
# Momentum assumed where the file does not say (torch's default), in torch's convention.
DEFAULT_MOMENTUM = 0.1
# running_var is never known better than this, relatively (weights that moved while it
# averaged, float32 sums): a floor under its standard error.
FLOOR_REL = 0.01
# Batch sizes within this many standard errors of running_var are plausible (two-sided 99.7%).
Z_PLAUSIBLE = 3.0
# An estimate is trusted when the plausible sizes span at most this factor: then the size
# reported is within a factor 2 of every plausible size, the true one included.
MAX_SPAN = 4.0
# The sizes tried: every size up to 128, then a geometric grid. Plausible at the last one means
# no upper bound.
GRID = (*range(1, 129), 160, 192, 256, 384, 512, 768, 1024, 2048, 4096, 8192)


class BatchSizeSource(StrEnum):
    """Where the training batch size came from."""

    OPTION = "option"  # --train-batch-size
    ESTIMATED = "estimated"  # fitted to running_var, within a factor 2
    UNCERTAIN = "uncertain"  # running_var allows a wide range; a value from that range
    ASSUMED = "assumed"  # could not be fitted; a default
    UNUSED = "unused"  # nothing depends on the batch

    @property
    def is_known(self) -> bool:
        """Whether a verdict may rest on the batch size (given, or estimated and trusted)."""
        return self in (BatchSizeSource.OPTION, BatchSizeSource.ESTIMATED)


@dataclass(frozen=True)
class BatchSizeEstimate:
    """The training batch size used for the reference, and how it was obtained.

    ``low`` and ``high`` bound the plausible sizes of an estimate (``high`` None: no upper
    bound); both are None where nothing was estimated.
    """

    value: int
    source: BatchSizeSource
    detail: str
    low: int | None = None
    high: int | None = None

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        out: dict[str, object] = {"value": self.value, "source": self.source.value,
                                  "detail": self.detail}
        if self.low is not None:
            out["plausible"] = {"low": self.low, "high": self.high}
        return out


@dataclass(frozen=True)
class _Layer:
    """One layer's evidence: its predictions of running_var for any batch size."""

    name: str
    inv_b: float  # the least-squares 1/B, for the report
    between: np.ndarray
    within: np.ndarray
    rv: np.ndarray
    spread: Spread
    spatial: int
    n: float
    ema: float  # variance of the running average / variance of one batch's
    unbiased: bool  # whether running_var averages unbiased batch variances

    def residual(self, b: int) -> tuple[float, float]:
        """(prediction - running_var, its standard error) at batch size ``b``, projected on
        the between-sample variance and so in units of 1/B.

        The channels' errors are added as if fully correlated (they come from the same samples
        and batches): an upper bound on the projection's error.
        """
        # torch stores unbiased batch variances; Keras biased ones.
        bessel = b * self.spatial / max(b * self.spatial - 1.0, 1.0) if self.unbiased else 1.0
        a = 1.0 - 1.0 / b
        predicted = bessel * (self.within + a * self.between)
        per_sample = bessel * bessel * self.spread.var_of(a)
        sd = np.sqrt(per_sample / self.n + self.ema * per_sample / b + (FLOOR_REL * self.rv) ** 2)
        beta = self.between / max(float(np.sum(self.between ** 2)), TINY)
        return float(np.sum(beta * (predicted - self.rv))), float(np.sum(np.abs(beta) * sd))


def estimate_batch_size(first_layers: list[tuple[NormLayer, LayerAccumulator]], n_samples: int,
                        min_batch: int = 1) -> BatchSizeEstimate:
    """The batch sizes that ``running_var`` at the layers nearest the input allows.

    Only the first layers are used: there eval and training propagation still agree. A layer
    whose running stats do not describe the data (shifted domain, stats never updated) ends the
    search; a layer whose per-sample means barely vary cannot tell batch sizes apart and is
    skipped. ``min_batch`` is 2 when some BN layer has no spatial dims (B = 1 cannot train).
    The accumulators must keep their spread (``TapCollector`` with the running means as centers).
    """
    fallback = max(min_batch, min(DEFAULT_BATCH, n_samples))
    reasons = []
    evidence: list[_Layer] = []
    for layer, acc in first_layers[:LAYERS_TRIED]:
        if acc.spatial <= 1:
            continue
        fit = _evidence(layer, acc, n_samples, min_batch)
        if isinstance(fit, _Misfit):
            reasons.append(fit.reason)
            if fit.ends_search:
                break
            continue
        evidence.append(fit)
    if not evidence:
        why = "; ".join(reasons) if reasons else "no layer near the input has spatial dims"
        return BatchSizeEstimate(fallback, BatchSizeSource.ASSUMED, f"{why}; assumed {fallback} "
                                 "(give --train-batch-size to set it)")
    grid = [b for b in GRID if b >= min_batch]
    scores = {b: _combined(evidence, b) for b in grid}
    plausible = [b for b, (r, se) in scores.items() if abs(r) <= Z_PLAUSIBLE * se]
    names = ", ".join(f"{e.name} ({e.inv_b:.3f})" for e in evidence)
    if not plausible:
        best = min(grid, key=lambda b: abs(scores[b][0]) / scores[b][1])
        z = abs(scores[best][0]) / scores[best][1]
        return BatchSizeEstimate(fallback, BatchSizeSource.ASSUMED,
                                 f"running_var fits no batch size (1/B by layer: {names}; the "
                                 f"closest, {best}, is {z:.1f} standard errors off); assumed "
                                 f"{fallback} (give --train-batch-size to set it)")
    low, top = plausible[0], plausible[-1]
    high = None if top == grid[-1] else top
    best = min(plausible, key=lambda b: abs(scores[b][0]) / scores[b][1])
    r, se = scores[best]
    figures = f"1/B = {r + 1.0 / best:.3f} +- {se:.3f} over {names}"
    if high is not None and high <= MAX_SPAN * low:
        # Within a factor 2 of every plausible size.
        value = min(max(best, math.ceil(high / 2)), 2 * low)
        span = f"{low}" if low == high else f"{low} to {high}"
        return BatchSizeEstimate(value, BatchSizeSource.ESTIMATED,
                                 f"from running_var: {figures}; plausible {span}", low, high)
    # Uncertain: a size from the plausible range that leaves several reference batches.
    value = max(low, min(DEFAULT_BATCH, max(n_samples // 4, 1)))
    if high is not None:
        value = min(value, high)
    span = f"{low} or more" if high is None else f"{low} to {high}"
    return BatchSizeEstimate(value, BatchSizeSource.UNCERTAIN,
                             f"running_var allows batch sizes {span} ({figures}); the reference "
                             f"uses {value}, and no fix that rests on the batch size is "
                             "recommended (give --train-batch-size to set it)", low, high)


def _combined(evidence: list[_Layer], b: int) -> tuple[float, float]:
    """Inverse-variance weighted residual over the layers at batch size ``b``, and its standard
    error, taken as the weighted mean of theirs (layers share samples: not averaged down)."""
    res = [e.residual(b) for e in evidence]
    weights = [1.0 / max(se, TINY) ** 2 for _, se in res]
    total = sum(weights)
    r = sum(w * x for w, (x, _) in zip(weights, res, strict=True)) / total
    se = sum(w * s for w, (_, s) in zip(weights, res, strict=True)) / total
    return r, max(se, TINY)


@dataclass(frozen=True)
class _Misfit:
    """Why a layer gives no estimate, and whether deeper layers can still be trusted."""

    reason: str
    ends_search: bool = False


def ema_factor(layer: NormLayer) -> float:
    """Variance of a running average over that of one batch's statistic.

    An exponential average with torch momentum m holds ``m / (2 - m)`` of it; a cumulative one
    ``1 / batches``. Where the file does not say, torch's default momentum.
    """
    if layer.momentum_note is MomentumNote.CUMULATIVE and layer.num_batches_tracked:
        return 1.0 / layer.num_batches_tracked
    m = layer.momentum if layer.momentum else DEFAULT_MOMENTUM
    return m / (2.0 - m)


def _evidence(layer: NormLayer, acc: LayerAccumulator, n: int, min_batch: int
              ) -> _Layer | _Misfit:
    """A layer's evidence, or why it gives none."""
    assert layer.running_mean is not None and layer.running_var is not None
    assert acc.spread is not None, "the estimate needs the eval pass's spread"
    rv, rm = layer.running_var, layer.running_mean
    mu = acc.population.mean
    assert mu is not None
    total, between, within = acc.population.var, acc.between_var, acc.within_var
    if not np.isfinite(rm).all() or not np.isfinite(rv).all():
        return _Misfit(f"running stats of {layer.name} are not finite")
    ema = ema_factor(layer)
    with np.errstate(all="ignore"):
        shift = np.abs(mu - rm) / np.sqrt(np.maximum(rv, TINY))
        # The running mean scatters most at the smallest batch size; the data's mean scatters
        # with the sample count.
        noise = np.sqrt(ema * between / min_batch + between / max(n, 1))
        ratio = np.abs(mu - rm) / np.maximum(noise, TINY)
    if float(np.median(shift)) > MAX_MEAN_SHIFT and float(np.median(ratio)) > MAX_NOISE_RATIO:
        # Layers after one whose stats do not describe the data see other inputs in training.
        return _Misfit(f"running stats of {layer.name} do not describe the sample data (median "
                       f"mean shift {float(np.median(shift)):.2f} running std)", ends_search=True)
    share = between / np.maximum(rv, TINY)
    if float(np.median(share)) < MIN_BETWEEN_SHARE:
        return _Misfit(f"per-sample means at {layer.name} barely vary "
                       f"({100 * float(np.median(share)):.1f}% of the variance), so the batch size "
                       "cannot be read from it")
    inv_b = float(np.sum(between * (total - rv)) / max(float(np.sum(between * between)), TINY))
    fitted = within + (1.0 - float(np.clip(inv_b, 0.0, 1.0))) * between
    err = float(np.median(np.abs(fitted - rv) / np.maximum(rv, TINY)))
    if err > MAX_FIT_ERROR:
        return _Misfit(f"running_var of {layer.name} fits no batch size (median relative error "
                       f"{err:.2f})")
    return _Layer(layer.name, inv_b, between, within, rv, acc.spread, acc.spatial,
                  float(acc.sample_means.count), ema, layer.unbiased_var)
