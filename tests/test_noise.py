"""The noise-floor pass stops early only when the rest of it cannot change the verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA, model_path

import bncheck
from bncheck.core.judgement import noise
from bncheck.core.judgement.discrepancy import Distance
from bncheck.core.judgement.tolerance import tolerance_for
from bncheck.core.passes.outputs import OutputStore

B = 8  # samples per batch in the synthetic runs


def _stores(errors: np.ndarray) -> tuple[OutputStore, OutputStore]:
    """A reference of unit-norm rows, and a run whose rows are ``errors`` away from them."""
    n = errors.size
    ref, got = OutputStore(n), OutputStore(n)
    rows = np.zeros((n, 4), np.float32)
    rows[:, 0] = 1.0
    ref.write(np.arange(n), rows)
    moved = rows.copy()
    moved[:, 1] = errors
    got.write(np.arange(n), moved)
    return ref, got


def _rule(errors: np.ndarray, eval_mean: float
          ) -> tuple[noise._Settled, OutputStore, list[np.ndarray]]:
    ref, got = _stores(errors)
    idx = np.arange(errors.size)
    chunks = [idx[s:s + B] for s in range(0, idx.size, B)]
    return noise._Settled(Distance(ref, idx), eval_mean), got, chunks


def test_a_wide_margin_settles_at_the_first_look() -> None:
    errors = np.random.default_rng(0).normal(0.2, 0.02, 32 * B)
    rule, got, chunks = _rule(errors, eval_mean=0.15)  # tolerance about 0.4
    assert rule.checkpoints(len(chunks)) == [4, 8, 16]
    assert rule(got, chunks[:4], len(chunks)) and rule.stopped_at == 4


def test_four_batches_are_not_enough_for_a_moderate_margin() -> None:
    # Three standard errors would settle this at 4 batches; with 3 degrees of freedom that is
    # only 97% confidence, so the rule waits for 8.
    errors = np.random.default_rng(1).normal(0.2, 0.05, 32 * B)
    rule, got, chunks = _rule(errors, eval_mean=0.0)
    means = np.array([errors[c].mean() for c in chunks[:4]])
    se = means.std(ddof=1) / 2 * np.sqrt(1 - 4 / len(chunks))
    rule.eval_mean = tolerance_for(errors[:4 * B].mean() - 4 * se)
    assert not rule(got, chunks[:4], len(chunks))
    assert rule(got, chunks[:8], len(chunks)) and rule.stopped_at == 8


@pytest.mark.parametrize("past_tolerance", [-0.002, 0.05])
def test_a_close_call_or_a_mismatch_is_not_settled(past_tolerance: float) -> None:
    errors = np.random.default_rng(0).normal(0.2, 0.02, 32 * B)
    # Just inside the full pass's tolerance (closer than the batches seen can tell), or outside.
    rule, got, chunks = _rule(errors, tolerance_for(errors.mean()) + past_tolerance)
    assert not any(rule(got, chunks[:k], len(chunks)) for k in rule.checkpoints(len(chunks)))
    assert rule.stopped_at is None


def test_a_reference_near_the_tolerance_cap_is_not_settled() -> None:
    # A floor near 0.3 puts the tolerance near the 0.6 cap: too close to call early.
    errors = np.random.default_rng(0).normal(0.29, 0.05, 32 * B)
    rule, got, chunks = _rule(errors, eval_mean=0.1)
    assert not any(rule(got, chunks[:k], len(chunks)) for k in rule.checkpoints(len(chunks)))


def test_non_finite_outputs_are_not_settled() -> None:
    errors = np.full(32 * B, 0.2)
    errors[3] = np.nan
    rule, got, chunks = _rule(errors, eval_mean=0.01)
    assert not rule(got, chunks[:4], len(chunks))


def test_a_stopped_noise_floor_gives_the_full_pass_verdict(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    net = torch.load(model_path("digits", "full"), weights_only=False)
    x = np.load(DATA / "digits_x.npy")
    # At batch size 16 the 256 samples make 16 batches: enough for the bound to settle at 8.
    early = bncheck.compare(net, x, train_batch_size=16)
    monkeypatch.setattr(noise, "T999", {})  # no quantile, no bound: the whole pass runs
    full = bncheck.compare(net, x, train_batch_size=16)
    a, b = early.measurements.noise_floor, full.measurements.noise_floor
    assert a is not None and b is not None
    assert a.notes and a.notes[0].startswith("the noise floor was measured on 128 of 256 samples")
    assert not b.notes
    assert early.verdict.verdict.value == full.verdict.verdict.value == "ok"
    assert a.mean == pytest.approx(b.mean, abs=0.02)
    assert any("noise floor was measured on" in n for n in early.measurements.notes)


def test_a_mismatch_runs_the_whole_noise_floor() -> None:
    net = torch.load(model_path("digits_m0", "full"), weights_only=False)
    result = bncheck.compare(net, np.load(DATA / "digits_x.npy"), train_batch_size=32)
    assert result.verdict.verdict.value == "mismatch"
    nf = result.measurements.noise_floor
    assert nf is not None and not nf.notes


def test_untabulated_degrees_of_freedom_get_the_wider_margin_below() -> None:
    assert noise._t999(5) == noise.T999[3]
    assert noise._t999(1000) == noise.T999[127]
    assert noise._t999(2) == float("inf")  # fewer than 4 batches never settle
