"""Streaming float64 statistics against direct numpy computations."""

from __future__ import annotations

import numpy as np

from bncheck.core.moments import LayerAccumulator, Moments


def test_population_and_per_sample_moments_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(3.0, 2.0, (37, 5, 6, 7)) * rng.uniform(0.5, 2, (37, 1, 1, 1))).astype(np.float32)
    acc = LayerAccumulator()
    for s in range(0, 37, 8):  # uneven batches, merged
        acc.update(x[s:s + 8])
    x64 = x.astype(np.float64)
    flat = x64.transpose(1, 0, 2, 3).reshape(5, -1)
    assert acc.population.mean is not None
    np.testing.assert_allclose(acc.population.mean, flat.mean(1), rtol=1e-12)
    # Squares are taken in the input's float32 (one rounding each), sums in float64.
    np.testing.assert_allclose(acc.population.var, flat.var(1), rtol=1e-7)
    np.testing.assert_allclose(acc.population.var_unbiased, flat.var(1, ddof=1), rtol=1e-7)
    per_sample_mean = x64.mean((2, 3))
    np.testing.assert_allclose(acc.between_var, per_sample_mean.var(0), rtol=1e-10)
    np.testing.assert_allclose(acc.within_var, x64.var((2, 3)).mean(0), rtol=1e-7)


def test_merge_is_exact_for_large_offsets() -> None:
    # Naive sum-of-squares loses everything here; Chan's merge must not.
    rng = np.random.default_rng(1)
    data = 1e6 + rng.normal(0, 1e-2, 10_000)
    m = Moments()
    for chunk in np.array_split(data, 13):
        m.merge(float(chunk.size), np.array([chunk.mean()]), np.array([((chunk - chunk.mean()) ** 2).sum()]))
    np.testing.assert_allclose(m.var, [data.var()], rtol=1e-9)


def test_expected_batch_var_limits() -> None:
    acc = LayerAccumulator()
    rng = np.random.default_rng(2)
    acc.update(rng.normal(rng.normal(0, 3, (64, 2, 1)), 1.0, (64, 2, 50)).astype(np.float32))
    np.testing.assert_allclose(acc.expected_batch_var(1), acc.within_var)
    np.testing.assert_allclose(acc.expected_batch_var(10**9), acc.population.var, rtol=1e-6)
