"""Core formulas against values computed by hand (Polygraphy style), not against each other."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bncheck.core.batchsize import BatchSizeEstimate, BatchSizeSource, estimate_batch_size
from bncheck.core.compare import Measurements
from bncheck.core.diagnosis import divergence
from bncheck.core.discrepancy import Discrepancy
from bncheck.core.layers import Family, MomentumNote, NormLayer
from bncheck.core.moments import LayerAccumulator
from bncheck.core.outputs import OutputStore
from bncheck.core.reference import given_batch, plan_reference
from bncheck.core.tolerance import tolerance_for
from bncheck.core.verdict import FixMode, VerdictKind, decide
from tests.support.stats import accumulate


def _layer(mean: list[float], var: list[float], eps: float = 0.0) -> NormLayer:
    return NormLayer(name="bn", kind="BatchNorm2d", family=Family.BATCH, channels=len(mean),
                     eps=eps, momentum=0.1, momentum_note=MomentumNote.TORCH, affine=True,
                     tracks_running_stats=True, running_mean=np.array(mean),
                     running_var=np.array(var))


def test_gaussian_kl_and_shift_by_hand() -> None:
    # Every sample holds the values 1 and 3: mean 2, within-sample variance 1, no spread between
    # samples. Against running stats N(0, 4):
    #   KL = 0.5 * (ln(4/1) + (1 + 2^2)/4 - 1) = 0.5 * (1.386294 + 0.25) = 0.818147
    #   mean shift = |2 - 0| / sqrt(4) = 1; log var ratio = ln(1/4) = -1.386294
    acc = accumulate(np.tile(np.array([1.0, 3.0]), (8, 1, 1)).reshape(8, 1, 2))
    d = divergence(_layer([0.0], [4.0]), acc, batch_size=4)
    assert d.kl == pytest.approx(0.5 * (math.log(4.0) + 5.0 / 4.0 - 1.0), rel=1e-9)
    assert d.kl == pytest.approx(0.818147, abs=1e-6)
    assert d.mean_shift == pytest.approx(1.0)
    assert d.log_var_ratio == pytest.approx(-math.log(4.0))


def test_kl_counts_the_spread_of_batch_means() -> None:
    # Samples are constant maps at -1 and +1: within 0, between 1. At batch size 1 a batch's
    # variance is 0 (+eps) and its mean is +-1: against N(0, 1),
    #   KL = 0.5 * (ln(1/eps) + (eps + 0 + 1)/1 - 1), with eps = 0.25 to keep it finite.
    acc = accumulate(np.array([-1.0, 1.0] * 4).reshape(8, 1, 1).repeat(4, axis=2))
    d = divergence(_layer([0.0], [0.75], eps=0.25), acc, batch_size=1)
    given, rv = 0.25, 1.0
    assert d.kl == pytest.approx(0.5 * (math.log(rv / given) + (given + 0.0 + 1.0) / rv - 1.0))


def test_tolerance_rule() -> None:
    assert tolerance_for(0.1) == pytest.approx(0.2)  # twice the noise floor
    assert tolerance_for(0.0) == pytest.approx(0.05)  # never below the absolute floor
    assert tolerance_for(0.02) == pytest.approx(0.05)


def _measured(floor: float, cands: dict[str, float], n: int = 256, b: int = 16
              ) -> Measurements:
    def d(name: str, mean: float) -> Discrepancy:
        return Discrepancy(name, 16, mean, mean, mean, None)

    return Measurements(n, n, 16, BatchSizeEstimate(b, BatchSizeSource.OPTION, "test"),
                        d("noise-floor", floor), {k: d(k, v) for k, v in cands.items()}, (), 3,
                        (), n // b)


def test_decide_prefers_batch_independent_fixes_within_tolerance() -> None:
    # Tolerance 2 * 0.1 = 0.2: recalibrate (0.15) beats a closer instance-norm (0.01), since
    # both are within tolerance and recalibrate comes first.
    v = decide(_measured(0.1, {"eval": 0.9, "recalibrate": 0.15, "instance-norm": 0.01,
                               "batch-stats": 0.0}))
    assert v.verdict is VerdictKind.MISMATCH and v.mode is FixMode.RECALIBRATE
    assert v.tolerance == pytest.approx(0.2)


def test_decide_takes_the_closest_when_nothing_is_within() -> None:
    v = decide(_measured(0.1, {"eval": 0.9, "recalibrate": 0.5, "instance-norm": 0.3,
                               "batch-stats": 0.4}))
    assert v.mode is FixMode.INSTANCE_NORM and "comes closest" in v.reason


def test_decide_ok_and_inconclusive() -> None:
    assert decide(_measured(0.1, {"eval": 0.19})).verdict is VerdictKind.OK
    # Floor 0.35: a tolerance of 0.7 would pass an unrelated output; no verdict.
    assert decide(_measured(0.35, {"eval": 0.5})).verdict is VerdictKind.INCONCLUSIVE
    # 3 reference batches of 16 are too few.
    assert decide(_measured(0.1, {"eval": 0.9}, n=48)).verdict is VerdictKind.INCONCLUSIVE


def _acc(within: float, between: float, n: int = 64, seed: int = 0) -> LayerAccumulator:
    """Samples with exactly this between-sample variance of means and within-sample variance."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal(n)
    means = (means - means.mean()) / means.std() * math.sqrt(between)
    pattern = np.array([-1.0, 1.0] * 8) * math.sqrt(within)
    return accumulate((means[:, None] + pattern[None, :]).reshape(n, 1, 16))


def test_batch_size_estimate_recovers_b_by_hand() -> None:
    # running_var = within + (1 - 1/4) * between = 1 + 0.75 * 2 = 2.5 means B = 4.
    acc = _acc(within=1.0, between=2.0)
    est = estimate_batch_size([(_layer([0.0], [2.5]), acc)], n_samples=64)
    assert est.source is BatchSizeSource.ESTIMATED and est.value == 4


def test_batch_size_is_assumed_when_samples_barely_differ() -> None:
    acc = _acc(within=1.0, between=0.001)
    est = estimate_batch_size([(_layer([0.0], [1.0]), acc)], n_samples=64)
    assert est.source is BatchSizeSource.ASSUMED and est.value == 32
    assert "barely vary" in est.detail


def test_batch_size_from_the_option_and_unused() -> None:
    plan = plan_reference(given_batch(2), 8)
    assert plan.train.source is BatchSizeSource.OPTION and plan.batch == 2
    assert sorted(plan.used.tolist()) == list(range(8))  # all samples, shuffled
    from bncheck.core.compare import compare

    class _NoNorm:
        def layers(self) -> list[NormLayer]:
            return []

    m = compare(_NoNorm(), _Arrays(), batch_size=4, train_batch_size=None)  # type: ignore[arg-type]
    assert m.train_batch.source is BatchSizeSource.UNUSED and m.forward_passes == 0


class _Arrays:
    def __len__(self) -> int:
        return 4

    def load(self, index: np.ndarray) -> list[np.ndarray]:
        return [np.zeros((index.size, 1), np.float32)]


def test_output_store_reads_back_by_index() -> None:
    store = OutputStore(5)
    store.write(np.array([3, 0]), np.array([[3.0, 30.0], [0.0, 0.5]]))
    store.write(np.array([4, 1, 2]), np.array([[4.0, 4.5], [1.0, 1.5], [2.0, 2.5]]))
    got = store.read(np.array([0, 1, 2, 3, 4]))
    np.testing.assert_array_equal(got, [[0, 0.5], [1, 1.5], [2, 2.5], [3, 30], [4, 4.5]])
    assert got.dtype == np.float32
    store.close()
