"""The noise floor: how far the reference moves when the same samples are re-batched.

The pass stops early when the rest of it would not change the verdict. A healthy verdict needs
``tolerance_for(floor) >= eval``. Once the batches seen so far put the floor's mean that high,
and the tolerance below ``MAX_TOLERANCE``, with one-sided 99.9% confidence (a Student-t bound on
the batch means), the remaining batches are skipped. Any other case gets the full pass: a
mismatch, a close call, or a reference too noisy to judge by. There the tolerance also judges
the candidate fixes.
"""

from __future__ import annotations

import math

import numpy as np

from bncheck.core.judgement.discrepancy import Discrepancy, Distance
from bncheck.core.judgement.tolerance import MAX_TOLERANCE, tolerance_for
from bncheck.core.network.model import Model
from bncheck.core.passes.outputs import OutputStore
from bncheck.core.passes.reference import SHUFFLE_SEED
from bncheck.core.passes.runner import Runner

# One-sided 99.9% quantiles of Student's t, by degrees of freedom (checkpoint batches - 1): the
# spread of a few batch means is itself uncertain, so the margin is wide at the first looks.
T999 = {3: 10.215, 7: 4.785, 15: 3.733, 31: 3.375, 63: 3.225, 127: 3.156}
# Batches before the first look, and the first look's spacing: the look at k batches is followed
# by one at 2k, so the re-reads of the outputs cost less than one more full read.
FIRST_LOOK = 4


class _Settled:
    """The stop rule of the noise-floor pass (see the module docstring)."""

    def __init__(self, dist: Distance, eval_mean: float) -> None:
        self.dist = dist
        self.eval_mean = eval_mean
        self.stopped_at: int | None = None

    def checkpoints(self, batches: int) -> list[int]:
        """FIRST_LOOK batches, then twice as many each time, below ``batches``."""
        out, k = [], FIRST_LOOK
        while k < batches:
            out.append(k)
            k *= 2
        return out

    def __call__(self, store: OutputStore, done: list[np.ndarray], batches: int) -> bool:
        """Whether the batches ``done``, of the pass's ``batches``, settle a healthy verdict."""
        errs = [self.dist.errors(store, idx)[0] for idx in done]
        means = np.array([e.mean() for e in errs])
        if not np.all(np.isfinite(means)):
            return False
        mean = float(np.concatenate(errs).mean())
        # Batches are drawn without replacement from the pass's batches: hence the correction.
        se = float(means.std(ddof=1)) / math.sqrt(means.size) \
            * math.sqrt(1 - means.size / batches)
        margin = _t999(means.size - 1) * se
        settled = (tolerance_for(mean - margin) >= self.eval_mean
                   and tolerance_for(mean + margin) <= MAX_TOLERANCE)
        if settled:
            self.stopped_at = len(done)
        return settled


def _t999(dof: int) -> float:
    """The quantile for ``dof``, else for the nearest tabulated one below it: a wider margin."""
    below = [k for k in T999 if k <= dof]
    return T999[max(below)] if below else math.inf


def noise_floor(runner: Runner, ref_model: Model, dist: Distance, batch_size: int,
                eval_mean: float, notes: list[str]) -> tuple[Discrepancy, bool]:
    """The reference re-batched by another seeded shuffle, measured against the reference, and
    whether its pass stopped early because the batches seen settle a healthy verdict.

    A pass that stopped early says so in ``notes`` (the report's) and in its own notes.
    """
    if batch_size == 1:
        return Discrepancy("noise-floor", 1, 0.0, 0.0, 0.0, None,
                           ("at batch size 1 the reference does not depend on batch composition",)
                           ), False
    # Another seeded shuffle of the same samples: each meets other batch-mates.
    order = np.random.default_rng(SHUFFLE_SEED + 1).permutation(dist.used)
    rule = _Settled(dist, eval_mean)
    rebatched = runner.run(ref_model, "noise floor", batch_size, order, stop=rule)
    if rule.stopped_at is None:
        d = dist.discrepancy("noise-floor", batch_size, rebatched)
    else:
        seen = order[:rule.stopped_at * batch_size]
        note = (f"the noise floor was measured on {seen.size} of {order.size} samples: they put "
                "eval mode within tolerance with 99.9% confidence, so the rest were not run")
        notes.append(note)
        d = dist.discrepancy("noise-floor", batch_size, rebatched, seen, (note,))
    rebatched.close()
    return d, rule.stopped_at is not None
