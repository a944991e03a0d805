"""Estimating the training batch size from the running statistics and the sample data.

A batch's variance at batch size B is about the within-sample variance plus ``(1 - 1/B)`` times
the variance of the per-sample means, and its mean scatters around the population's by
``between / B``: so the running statistics of the layers nearest the input (where eval and
training propagation still agree) say which B they were averaged at. They say it only as a
noisy average does: ``core/stats/running_average.py`` simulates that average at each candidate B from
the sample data, with the layer's own momentum, and scores how typical the observed running
statistics are. Every batch size whose score at every layer is within ``Z_PLAUSIBLE`` is
plausible; the estimate is trusted only when the plausible sizes span at most a factor
``MAX_SPAN``, else it is uncertain, and a verdict must not rest on it (docs/design.md, "The
training batch size").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from bncheck.core.network.layers import NormLayer
from bncheck.core.network.moments import LayerAccumulator
from bncheck.core.network.numerics import TINY
from bncheck.core.stats.running_average import AverageModel, Score

DEFAULT_BATCH = 32
# The batch size changes a layer's batch statistics by at most the between-sample variance;
# below this share of running_var it drowns in the noise of the running average.
MIN_BETWEEN_SHARE = 0.05
LAYERS_TRIED = 3
# Fewer sample rows than this cannot show how a running average scatters.
MIN_ROWS = 16
# Batch sizes scoring within this at every layer are plausible: one-sided 99.9% at each.
Z_PLAUSIBLE = 3.0
# An estimate is trusted when the plausible sizes span at most this factor; the size reported
# is then the most likely one.
MAX_SPAN = 4.0
# The sizes tried. Plausible at the last one means no upper bound.
GRID = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112,
        128, 160, 192, 256, 384, 512, 768, 1024, 2048, 4096, 8192)


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


def estimate_batch_size(first_layers: list[tuple[NormLayer, LayerAccumulator]], n_samples: int,
                        min_batch: int = 1) -> BatchSizeEstimate:
    """The batch sizes that the running statistics of the layers nearest the input allow.

    A layer whose running stats fit no batch size (a shifted domain, stats never updated) ends
    the search, since the layers after it saw other inputs in training; a layer whose per-sample
    means barely vary cannot tell batch sizes apart and is skipped. ``min_batch`` is 2 when some
    BN layer has no spatial dims (B = 1 cannot train). The accumulators must keep their sample
    rows (``TapCollector(rows=...)``).
    """
    fallback = max(min_batch, min(DEFAULT_BATCH, n_samples))
    grid = [b for b in GRID if b >= min_batch]
    reasons: list[str] = []
    scores: dict[int, Score] = {}
    name = ""
    for layer, acc in first_layers[:LAYERS_TRIED]:
        if acc.spatial <= 1:
            continue
        misfit = _unusable(layer, acc, need_spread=False)
        if misfit is not None:
            reasons.append(misfit.reason)
            if misfit.ends_search:
                break
            continue
        assert acc.rows is not None
        model = AverageModel(layer, acc.rows, acc.spatial)
        flat = _unusable(layer, acc)
        if flat is not None:
            # Batch sizes look alike here; but stats that no average of this data holds at any
            # of them describe other inputs, and so do the layers after.
            fit = model.score(DEFAULT_BATCH).fit
            if fit > Z_PLAUSIBLE:
                reasons.append(f"running stats of {layer.name} do not describe the sample data "
                               f"({fit:.1f} standard deviations from a running average of it)")
                break
            reasons.append(flat.reason)
            continue
        scores = model.scores(grid)
        name = layer.name
        # Only the first layer that tells batch sizes apart is a witness: the layers after it
        # see, in eval mode, inputs that its running stats normalized, not the batch statistics
        # they saw in training, and the two differ exactly where the batch size matters.
        break
    if not scores:
        why = "; ".join(reasons) if reasons else "no layer near the input has spatial dims"
        return BatchSizeEstimate(fallback, BatchSizeSource.ASSUMED, f"{why}; assumed {fallback} "
                                 "(give --train-batch-size to set it)")
    plausible = [b for b in grid if scores[b].value <= Z_PLAUSIBLE]
    if not plausible:
        closest = min(scores.values(), key=lambda s: s.fit)
        return BatchSizeEstimate(fallback, BatchSizeSource.ASSUMED,
                                 f"running stats of {name} fit no batch size (the closest, "
                                 f"{closest.batch}, scores {closest.fit:.1f} standard "
                                 "deviations from a running average of such batches); assumed "
                                 f"{fallback} (give --train-batch-size to set it)")
    low, top = plausible[0], plausible[-1]
    high = None if top == grid[-1] else top
    # The most likely size: the one whose average is tightest around what was observed.
    best = max(plausible, key=lambda b: scores[b].loglik)
    figures = f"the running stats of {name} are most likely an average over batches of {best}"
    if high is not None and high <= MAX_SPAN * low:
        span = f"{low}" if low == high else f"{low} to {high}"
        return BatchSizeEstimate(best, BatchSizeSource.ESTIMATED,
                                 f"{figures}; plausible {span}", low, high)
    # Uncertain: a size from the plausible range that leaves several reference batches.
    value = max(low, min(DEFAULT_BATCH, max(n_samples // 4, 1)))
    if high is not None:
        value = min(value, high)
    span = f"{low} or more" if high is None else f"{low} to {high}"
    return BatchSizeEstimate(value, BatchSizeSource.UNCERTAIN,
                             f"running stats allow batch sizes {span} ({figures}); the "
                             f"reference uses {value}, and no fix that rests on the batch size "
                             "is recommended (give --train-batch-size to set it)", low, high)


@dataclass(frozen=True)
class _Misfit:
    """Why a layer gives no estimate, and whether deeper layers can still be trusted."""

    reason: str
    ends_search: bool = False


def _unusable(layer: NormLayer, acc: LayerAccumulator, *, need_spread: bool = True
              ) -> _Misfit | None:
    """Why a layer gives no evidence, or None. ``need_spread``: its per-sample means must also
    vary enough to tell batch sizes apart."""
    assert layer.running_mean is not None and layer.running_var is not None
    if not np.isfinite(layer.running_mean).all() or not np.isfinite(layer.running_var).all():
        return _Misfit(f"running stats of {layer.name} are not finite", ends_search=True)
    if acc.rows is None or acc.rows.count < MIN_ROWS:
        return _Misfit(f"too few samples reached {layer.name} to model its running average")
    share = acc.between_var / np.maximum(layer.running_var, TINY)
    if need_spread and float(np.median(share)) < MIN_BETWEEN_SHARE:
        return _Misfit(f"per-sample means at {layer.name} barely vary "
                       f"({100 * float(np.median(share)):.1f}% of the variance), so the batch "
                       "size cannot be read from it")
    return None
