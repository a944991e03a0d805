"""When a pass may stop tapping: its layer statistics have converged (docs/design.md, "Cost").

A tapped pass reduces every norm layer's input on each batch; the figures compare derives from
those moments need enough samples for their own error, not all of them. At checkpoints (doubling
batch counts; the first, at half ``MIN_SAMPLES``, only keeps its taps) the rule compares what
the samples tapped so far say with what their first half said:

- every decision must be the same on both: the training batch size estimated from them (value,
  kind, plausible range), each layer's stats-divergence level, and whether the first layer sees
  an input shift;
- every layer figure (mean shift, log variance ratio, expected KL) must agree within
  ``REL_TOL`` of its size or ``ABS_TOL``, whichever is larger.

The taps then end, and the rest of the pass runs untapped (outputs only). Samples run in the
reference's shuffled order, so the tapped ones are a random subset, wherever the data changes
in its file. compare keeps every tap (completing them afterwards) unless the verdict is a
settled healthy one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

from bncheck.core.judgement.diagnosis import divergence
from bncheck.core.network.layers import NormLayer
from bncheck.core.stats.taps import TapCollector

# No pass stops tapping before this many samples (its first half is the first checkpoint):
# below it the figures' own errors are several percent (the KL of 512 samples of one channel
# scatters by about sqrt(2/512) = 6% of itself).
MIN_SAMPLES = 512
# A figure settles when its half and whole agree within 5% of its size or 0.02 (mean shifts
# in running std, log variance ratios, KL in nats): under a tenth of the distance between the
# KL levels findings use (0.1, 0.5), and under the figures' own sampling error at the first look
# (the log variance ratio of 512 samples scatters by sqrt(2/512) = 0.06).
REL_TOL = 0.05
ABS_TOL = 0.02

# What compare takes from taps, given them and how many samples they hold: the decisions that
# must not change between the half and the whole, and the batch size the figures are taken at.
Judge = Callable[[TapCollector, int], tuple[object, int]]


class Converged:
    """A ``Runner`` tap rule: asked at doubling checkpoints, True once the taps may end."""

    def __init__(self, layers: Mapping[str, NormLayer], batch_size: int, judge: Judge) -> None:
        self.layers = layers
        self.batch_size = batch_size
        self.judge = judge
        # The taps at the last checkpoint, and what they were judged to say.
        self.half: tuple[TapCollector, tuple[object, int]] | None = None
        self.stopped_at: int | None = None  # batches tapped, when the taps ended early

    def checkpoints(self, batches: int) -> list[int]:
        """Each twice the one before, the first at half MIN_SAMPLES (at least one batch): that
        one only keeps its taps as the half the next is compared with."""
        out, k = [], max(1, -(-MIN_SAMPLES // (2 * self.batch_size)))
        while k < batches:
            out.append(k)
            k *= 2
        return out

    def __call__(self, taps: TapCollector, batches_done: int) -> bool:
        """Whether the taps of ``batches_done`` batches agree with those of the first half."""
        judged = self.judge(taps, batches_done * self.batch_size)
        settled = self.half is not None and self._agree(*self.half, taps, judged)
        if settled:
            self.stopped_at = batches_done
        else:
            self.half = copy.deepcopy(taps), judged
        return settled

    def _agree(self, half: TapCollector, half_judged: tuple[object, int], whole: TapCollector,
               judged: tuple[object, int]) -> bool:
        decisions, b = judged
        if half_judged[0] != decisions:
            return False
        for name in whole.order:
            if name not in half.acc or name not in self.layers:
                return False
            a = divergence(self.layers[name], half.acc[name], b)
            w = divergence(self.layers[name], whole.acc[name], b)
            for x, y in ((a.mean_shift, w.mean_shift), (a.log_var_ratio, w.log_var_ratio),
                         (a.kl, w.kl)):
                if not abs(x - y) <= max(REL_TOL * abs(y), ABS_TOL):
                    return False
        return True
