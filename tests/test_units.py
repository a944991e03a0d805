"""Core formulas against values computed by hand (Polygraphy style), not against each other."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bncheck.core.judgement.diagnosis import LayerDivergence, divergence
from bncheck.core.judgement.discrepancy import Discrepancy
from bncheck.core.judgement.measurements import LayerReport, Measurements
from bncheck.core.judgement.shift import ShiftEvidence
from bncheck.core.judgement.tolerance import tolerance_for
from bncheck.core.judgement.verdict import FixMode, VerdictKind, decide
from bncheck.core.network.layers import Family, MomentumNote, NormLayer
from bncheck.core.network.moments import LayerAccumulator, SampleRows
from bncheck.core.passes.outputs import OutputStore
from bncheck.core.passes.reference import given_batch, plan_reference
from bncheck.core.stats.batchsize import BatchSizeEstimate, BatchSizeSource, estimate_batch_size
from bncheck.core.stats.running_average import AverageModel, average_weights
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


def test_a_noisy_reference_still_shows_a_departure_beyond_zeros_and_its_noise() -> None:
    """Above the cap nothing passes, but eval mode farther from the trained behaviour than an
    all-zero output and than the tolerance is a mismatch (the zoo's short-trained MobileNetV3
    with never-updated statistics); nearer than either, inconclusive."""
    cands = {"recalibrate": 0.3, "instance-norm": 0.9, "batch-stats": 0.4}
    v = decide(_measured(0.35, {"eval": 1.3, **cands}))
    assert v.verdict is VerdictKind.MISMATCH and v.mode is FixMode.RECALIBRATE
    assert "too much to pass any output" in v.reason
    for floor, gap in ((0.35, 0.95), (0.7, 1.3), (0.35, float("nan"))):
        assert decide(_measured(floor, {"eval": gap, **cands})).verdict is \
            VerdictKind.INCONCLUSIVE, (floor, gap)


def _with_layer_kls(m: Measurements, kls: list[float]) -> Measurements:
    """``m`` with one reported layer per KL, under reference propagation."""
    def div(kl: float) -> LayerDivergence:
        return LayerDivergence(0.0, 0.0, 0.0, kl, [])

    layers = tuple(LayerReport(dataclasses.replace(_layer([0.0], [1.0]), name=f"bn{i}"), i, True,
                               div(0.0), div(kl)) for i, kl in enumerate(kls))
    return dataclasses.replace(m, layers=layers)


def test_a_noisy_reference_still_lets_plainly_wrong_running_stats_be_fixed() -> None:
    """Above the cap, a layer whose running stats are wrong for what it is given in training
    (expected KL 0.5 or more, pooled over every sample, so no output noise blurs it) is a
    mismatch when recalibrating brings the output closer, even with eval mode within the
    tolerance: the zoo's MobileNetV3-Large with never-updated statistics (eval 0.999, floor
    0.34). Below KL 0.5, or with recalibrate no closer, still inconclusive."""
    cands = {"eval": 0.95, "recalibrate": 0.3, "instance-norm": 0.9, "batch-stats": 0.0}
    v = decide(_with_layer_kls(_measured(0.5, cands), [0.01, 3.2, 0.7]))
    assert v.verdict is VerdictKind.MISMATCH and v.mode is FixMode.RECALIBRATE
    assert "running stats of 2 layer(s) are wrong" in v.reason and "worst bn1" in v.reason
    assert "expected KL 3.200" in v.reason
    for kls, recal in (([0.01, 0.49], 0.3), ([3.2], 0.96)):
        m = _with_layer_kls(_measured(0.5, {**cands, "recalibrate": recal}), kls)
        assert decide(m).verdict is VerdictKind.INCONCLUSIVE, (kls, recal)
    # Under the cap the rule changes nothing: within tolerance is ok.
    assert decide(_with_layer_kls(_measured(0.1, {"eval": 0.19}), [3.2])).verdict \
        is VerdictKind.OK


def test_recalibrate_reshuffles_a_set_of_few_batches() -> None:
    """Fewer than 32 batches are gathered again in other seeded shuffles, at most 8, every
    sample once per shuffle; the first two orders are the reference's and the noise floor's.
    At batch size 1 there is no composition to average over."""
    from bncheck.core.passes.recalibration import MAX_SHUFFLES, shuffles
    from bncheck.core.passes.reference import SHUFFLE_SEED

    plan = plan_reference(given_batch(32), 128)
    orders = shuffles(plan)
    assert len(orders) == MAX_SHUFFLES == 8
    assert np.array_equal(orders[0], plan.used)
    assert np.array_equal(orders[1], np.random.default_rng(SHUFFLE_SEED + 1).permutation(plan.used))
    assert all(np.array_equal(np.sort(o), np.sort(plan.used)) for o in orders)
    assert len({o.tobytes() for o in orders}) == 8
    assert len(shuffles(plan_reference(given_batch(32), 32 * 16))) == 2
    assert len(shuffles(plan_reference(given_batch(32), 32 * 40))) == 1
    assert len(shuffles(plan_reference(given_batch(1), 10))) == 1


def test_after_an_input_shift_a_candidate_within_tolerance_is_never_passed_over_in_silence(
        ) -> None:
    shift = ShiftEvidence("bn", 2.27, 0.03, 1, 9.0, 1.0)
    m = dataclasses.replace(_measured(0.01, {"eval": 0.9, "recalibrate": 0.5,
                                             "instance-norm": 0.01, "batch-stats": 0.02}),
                            shift=shift)
    # instance-norm is right under either reading: recommended, the shift still said.
    v = decide(m)
    assert v.verdict is VerdictKind.MISMATCH and v.mode is FixMode.INSTANCE_NORM
    assert v.diagnosis.value == "input-shift" and "per-sample gain and offset" in v.reason
    # With the batch size not known it rests on, one sentence each says why not.
    uncertain = BatchSizeEstimate(16, BatchSizeSource.UNCERTAIN, "allows 1 or more", 1, None)
    v = decide(dataclasses.replace(m, train_batch=uncertain))
    assert v.mode is FixMode.NONE
    assert "instance-norm comes to 0.010, within tolerance, but that rests on the training " \
        "batch size" in v.reason and "--train-batch-size" in v.reason
    assert "batch-stats comes to 0.020, within tolerance, but it would take every batch's " \
        "statistics" in v.reason
    # Nothing within tolerance: no such sentence.
    far = dataclasses.replace(_measured(0.01, {"eval": 0.9, "recalibrate": 0.5,
                                               "instance-norm": 0.4, "batch-stats": 0.3}),
                              shift=shift)
    assert "within tolerance, but" not in decide(far).reason


def test_a_batch_size_the_data_does_not_pin_never_carries_a_batch_dependent_fix() -> None:
    # instance-norm comes closest, but it rests on the training batch size: with that size
    # uncertain or assumed the answer is inconclusive, with the option to give.
    m = _measured(0.01, {"eval": 0.9, "recalibrate": 0.5, "instance-norm": 0.01,
                         "batch-stats": 0.4})
    assert decide(m).mode is FixMode.INSTANCE_NORM  # with the size given
    for source in (BatchSizeSource.UNCERTAIN, BatchSizeSource.ASSUMED):
        est = BatchSizeEstimate(16, source, "allows 1 or more", 1, None)
        v = decide(dataclasses.replace(m, train_batch=est))
        assert v.verdict is VerdictKind.INCONCLUSIVE and v.mode is FixMode.NONE
        assert "--train-batch-size" in v.reason
    # ok stands on an uncertain size, and says which sizes it could have been.
    ok = dataclasses.replace(_measured(0.1, {"eval": 0.1}), train_batch=BatchSizeEstimate(
        16, BatchSizeSource.UNCERTAIN, "allows 2 to 109", 2, 109))
    v = decide(ok)
    assert v.verdict is VerdictKind.OK and "training batch size 16, one of the plausible 2 to " \
        "109" in v.reason


def _acc(within: float, between: float, n: int = 64, seed: int = 0, channels: int = 1
         ) -> LayerAccumulator:
    """Samples with exactly this between-sample variance of means and within-sample variance
    in each channel, keeping their rows."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n, channels))
    means = (means - means.mean(axis=0)) / means.std(axis=0) * math.sqrt(between)
    pattern = np.array([-1.0, 1.0] * 8) * math.sqrt(within)
    return accumulate(means[:, :, None] + pattern[None, None, :], rows=True)


def test_sample_rows_keep_the_first_rows_in_order_and_merge_alike() -> None:
    rows = SampleRows()
    rows.add(np.arange(6.0).reshape(3, 2), np.ones((3, 2)))
    other = SampleRows()
    other.add(np.arange(6.0, 10.0).reshape(2, 2), 2 * np.ones((2, 2)))
    rows.merge(other)
    mean, within = rows.arrays()
    assert mean.tolist() == np.arange(10.0).reshape(5, 2).tolist()
    assert within[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]


def test_average_weights_by_hand() -> None:
    # An exponential average with weight m on the new value holds m / (2 - m) of one value's
    # variance: 0.1 / 1.9; its weights are 0.1, 0.09, 0.081, ... and add up to 1. A cumulative
    # one over 50 batches weighs each 1/50 and holds 1/50.
    w = average_weights(_layer([0.0], [1.0]))
    assert w.exact[:3] == pytest.approx([0.1, 0.09, 0.081])
    assert float(w.exact.sum()) + w.tail == pytest.approx(1.0)
    assert w.variance_factor == pytest.approx(0.1 / 1.9)
    cumulative = NormLayer(name="bn", kind="BatchNorm2d", family=Family.BATCH, channels=1,
                           eps=0.0, momentum=None, momentum_note=MomentumNote.CUMULATIVE,
                           affine=True, tracks_running_stats=True, running_mean=np.zeros(1),
                           running_var=np.ones(1), num_batches_tracked=50)
    c = average_weights(cumulative)
    assert c.variance_factor == pytest.approx(1 / 50)
    assert float(c.exact.sum()) + c.tail == pytest.approx(1.0)


def test_replicate_running_averages_have_the_expected_centre_and_spread() -> None:
    # Samples with within-sample variance 1 and per-sample means of variance 2. At batch size
    # B a batch's unbiased variance averages k_B (1 + (1 - 1/B) 2), k_B = 16B / (16B - 1); the
    # running mean scatters by sqrt(m / (2 - m) * 2 / B) around the population mean, plus the
    # bootstrap's sqrt(2 / n) for the population itself.
    acc = _acc(within=1.0, between=2.0, n=1024)
    assert acc.rows is not None
    model = AverageModel(_slow_layer(1.0, 0.1), acc.rows, acc.spatial)
    for b in (1, 4, 32):
        run_mean, run_var = (a[0] for a in model.replicates([b]))
        k = 16 * b / (16 * b - 1)
        assert float(run_var.mean()) == pytest.approx(k * (1 + (1 - 1 / b) * 2), rel=0.03)
        # Each replicate's channels also drift by 20% of the running std (DRIFT).
        drift = 0.04 * k * (1 + (1 - 1 / b) * 2)
        expected_sd = math.sqrt(0.1 / 1.9 * 2 / b + 2 / 1024 + drift)
        assert float(run_mean.std()) == pytest.approx(expected_sd, rel=0.2)


def _slow_layer(var: float, momentum: float, mean: float = 0.0, channels: int = 1) -> NormLayer:
    return NormLayer(name="bn", kind="BatchNorm2d", family=Family.BATCH, channels=channels,
                     eps=0.0, momentum=momentum, momentum_note=MomentumNote.TORCH, affine=True,
                     tracks_running_stats=True, running_mean=np.full(channels, mean),
                     running_var=np.full(channels, var))


def test_batch_size_estimate_recovers_b_by_hand() -> None:
    # running_var = within + (1 - 1/4) * between = 1 + 0.75 * 2 = 2.5 (times torch's Bessel
    # factor 64/63 for 4 samples of 16 values) means B = 4. With a slow average (momentum 0.01)
    # the average scatters little (an average of about 200 batches: about 4% of running_var),
    # and over 32 channels their 20% drift averages out, so only sizes near 4 fit.
    acc = _acc(within=1.0, between=2.0, n=4096, channels=32)
    est = estimate_batch_size([(_slow_layer(2.5 * 64 / 63, 0.01, channels=32), acc)],
                              n_samples=4096)
    assert est.source in (BatchSizeSource.ESTIMATED, BatchSizeSource.UNCERTAIN)
    assert est.low is not None and est.high is not None
    assert 2 <= est.low <= 4 <= est.high <= 32 and 2 <= est.value <= 16


def test_batch_size_is_uncertain_when_the_running_average_is_noisy() -> None:
    # The same layer with 64 samples and torch's momentum 0.1: an average of about 19 batches
    # of 4 scatters too much to tell 4 from 64 or more, and the estimate says it is uncertain.
    acc = _acc(within=1.0, between=2.0)
    est = estimate_batch_size([(_slow_layer(2.5 * 64 / 63, 0.1), acc)], n_samples=64)
    assert est.source is BatchSizeSource.UNCERTAIN and est.high is None
    assert est.low is not None and est.low <= 4 and "--train-batch-size" in est.detail
    assert not est.source.is_known


def test_batch_size_one_is_pinned_when_samples_differ_widely() -> None:
    # Trained at 1, running_var is the within-sample variance alone (1, times the Bessel factor
    # 16/15), far below within + between (3): B = 1. One channel's 20% drift still admits 2
    # (within + between / 2 = 2, log ratio 0.63), nothing larger.
    acc = _acc(within=1.0, between=2.0, n=256)
    est = estimate_batch_size([(_slow_layer(16 / 15, 0.1), acc)], n_samples=256)
    assert est.source is BatchSizeSource.ESTIMATED and est.value == 1
    assert est.high is not None and est.high <= 2


def test_a_running_mean_far_beyond_its_noise_fits_no_batch_size() -> None:
    # The running mean 3 from the data's mean, where an average of batches of any size
    # scatters by at most sqrt(0.1 / 1.9 * 2) = 0.32: the stats describe other data.
    acc = _acc(within=1.0, between=2.0, n=256)
    est = estimate_batch_size([(_slow_layer(16 / 15, 0.1, mean=3.0), acc)], n_samples=256)
    assert est.source is BatchSizeSource.ASSUMED and "fit no batch size" in est.detail


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


def test_launch_request_reads_the_option_off_the_command_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bncheck.cli.launching import check_single_launch, launch_request
    from bncheck.errors import BncheckError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["compare", "m.pt", "--nproc-per-node", "4", "--data", "x.npy"]
    assert launch_request(argv) == (["compare", "m.pt", "--data", "x.npy"], 4)
    assert launch_request(["rewrite", "m.pt", "--nproc-per-node=2"]) == (["rewrite", "m.pt"], 2)
    assert launch_request(["compare", "m.pt", "--nproc-per-node", "1"]) is None  # one process
    assert launch_request(["compare", "m.pt", "--nproc-per-node", "x"]) is None  # typer refuses
    assert launch_request(["inspect", "m.pt", "--nproc-per-node", "2"]) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch_request(argv) is None  # a worker runs the command itself
    with pytest.raises(BncheckError, match="torchrun"):
        check_single_launch(4)


def test_a_noisy_half_precision_reference_says_so_and_what_to_do() -> None:
    m = dataclasses.replace(_measured(0.35, {"eval": 0.5}), half_rounding=0.3)
    v = decide(m)
    assert v.verdict is VerdictKind.INCONCLUSIVE
    assert "half-precision model" in v.reason and "float16 rounding, not the batch" in v.reason
    assert "compare the float32 model" in v.reason
    quiet = decide(dataclasses.replace(m, half_rounding=0.001))
    assert "rounding is not what moves it" in quiet.reason
    assert "half-precision" not in decide(_measured(0.35, {"eval": 0.5})).reason


def test_a_launched_commit_is_recorded_for_the_interrupted_sentence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bncheck.core.distributed.launch_records import LAUNCH_DIR_ENV, interrupted, recorded_writes
    from bncheck.rewriting.atomic import staged_output

    folder, out = tmp_path / "launch", tmp_path / "fixed.onnx"
    folder.mkdir()
    monkeypatch.setenv(LAUNCH_DIR_ENV, str(folder))
    monkeypatch.setenv("RANK", "0")
    with staged_output(out) as staged:
        staged.path.write_bytes(b"model")
        assert recorded_writes(folder) == []  # staged, not yet committed
        staged.commit()
    assert recorded_writes(folder) == [str(out)]
    # Ctrl-C after rank 0 committed: the sentence must not say that nothing was written.
    assert interrupted("SIGINT", recorded_writes(folder)) == (
        f"interrupted by SIGINT after {out} was written and verified: every process stopped")
    assert interrupted("SIGINT", []).endswith("nothing was written")


def test_launch_outcome_names_the_cause_once() -> None:
    import signal

    from bncheck.backends.pytorch.launch import _outcome

    term, kill = -int(signal.SIGTERM), -int(signal.SIGKILL)
    # Rank 0 reported a mismatch; the agent then stopped rank 1: rank 0's code, nothing to add.
    assert _outcome({0: 1, 1: term}, {}, 2).code == 1
    assert _outcome({0: 1, 1: term}, {}, 2).messages == ()
    # Rank 0 refused bad data (printed) and rank 1 had the same sentence: nothing to add.
    same = _outcome({0: 2, 1: term}, {0: "bad record", 1: "bad record"}, 2)
    assert same.code == 2 and same.messages == ()
    # Rank 3 was killed first; the agent stopped the others: rank 3 is named.
    killed = _outcome({3: kill, 1: term, 0: term}, {}, 4)
    assert killed.code == 2 and killed.messages == (
        "process 3 of 4 was killed by SIGKILL before the job finished, so every process stopped "
        "and nothing was written",)
    # Under load the agent's timestamps may put its own stop of rank 0 before rank 1's kill.
    assert _outcome({0: term, 1: kill}, {}, 2).messages == (
        "process 1 of 2 was killed by SIGKILL before the job finished, so every process stopped "
        "and nothing was written",)
    # A sentence only rank 1 met; rank 0 saw it stop answering and said so.
    alone = _outcome({0: 2}, {0: "another process stopped answering", 1: "record 9 is bad"}, 2)
    assert alone.code == 2 and alone.messages == ("record 9 is bad",)
