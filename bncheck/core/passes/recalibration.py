"""The statistics recalibrate writes: reference propagation over enough re-batchings.

Under reference propagation (every normalization layer on batch statistics at the training batch
size) a layer after the first sees inputs that depend on which samples share its batch, so the
average of a few batches carries their composition's luck. Measured on torchvision's
MobileNetV3-Large, trained here and recalibrated on 128 samples at batch size 32: four batches
(one shuffle) left eval mode 0.15 to 0.46 from the trained behaviour (relative L2, the mean of
16 re-batchings), depending on the shuffle alone; 16 batches 0.21, 32 batches (eight shuffles)
0.18, 64 no closer (0.19 to 0.20), in two seeds each. A training run's cumulative average spans
hundreds of batches. So a sample set of fewer than ``MIN_BATCHES`` batches is run again in other
seeded shuffles, every sample once per shuffle; at batch size 1 composition does not exist and
one pass is all there is.
compare's recalibrate candidate and rewrite's recalibrate gather over the same shuffles.
"""

from __future__ import annotations

import math

import numpy as np

from bncheck.core.network.model import Model
from bncheck.core.network.moments import Moments
from bncheck.core.passes.reference import SHUFFLE_SEED, ReferencePlan
from bncheck.core.passes.runner import Runner
from bncheck.core.stats.taps import TapCollector

# Batches the statistics average over, at least, where the samples allow it by re-shuffling.
MIN_BATCHES = 32
# Shuffles at most: beyond eight, a small set's own sampling error dominates what is left.
MAX_SHUFFLES = 8


def shuffles(plan: ReferencePlan) -> list[np.ndarray]:
    """The sample orders recalibrate gathers over: the reference's own, then other seeded
    shuffles of the same samples (the first of them is the noise floor's)."""
    if plan.batch == 1:
        return [plan.used]
    count = min(MAX_SHUFFLES, math.ceil(MIN_BATCHES / max(plan.batches, 1)))
    return [plan.used, *(np.random.default_rng(SHUFFLE_SEED + k).permutation(plan.used)
                         for k in range(1, count))]


def gather(runner: Runner, ref_model: Model, plan: ReferencePlan, layers: list[str],
           first: TapCollector | None = None) -> tuple[dict[str, Moments], int]:
    """Each layer's input moments over every shuffle of ``plan``, and how many shuffles.

    Every shuffle holds the same samples, so the moments are those of one pass (count and M2
    divided by the shuffles): the unbiased variance is then Bessel-corrected for the samples
    there are, not for as many copies. ``first`` holds the taps of the reference's own order
    where a pass already gathered them (compare's reference pass); it is not changed.
    """
    orders = shuffles(plan)
    taps = TapCollector()
    if first is not None:
        taps.merge(first)
    todo = orders[1:] if first is not None else orders
    for k, order in enumerate(todo, 1):
        label = "recalibrate" if len(todo) == 1 else f"recalibrate {k}/{len(todo)}"
        runner.run(ref_model, label, plan.batch, order, taps=layers, on_tap=taps,
                   keep_outputs=False).close()
    return {name: _per_pass(acc.population, len(orders)) for name, acc in taps.acc.items()}, \
        len(orders)


def _per_pass(m: Moments, passes: int) -> Moments:
    assert m.mean is not None and m.m2 is not None
    return Moments(m.count / passes, m.mean, m.m2 / passes)
