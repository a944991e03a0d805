"""Mergeable float64 moments (count, mean, M2) and the per-layer accumulator the taps feed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Moments:
    """Per-channel count, mean and sum of squared deviations, merged with Chan et al.'s formula."""

    count: float = 0.0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def merge(self, count: float, mean: np.ndarray, m2: np.ndarray) -> None:
        """Fold in a block summarized by its own (count, mean, M2)."""
        if count <= 0:
            return
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = count, mean.astype(np.float64), m2.astype(np.float64)
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * count / total)
        self.count = total

    @property
    def var(self) -> np.ndarray:
        """Biased (population) variance."""
        assert self.m2 is not None
        return self.m2 / self.count

    @property
    def var_unbiased(self) -> np.ndarray:
        """Unbiased variance, as torch stores in running_var."""
        assert self.m2 is not None
        return self.m2 / max(self.count - 1.0, 1.0)


@dataclass
class LayerAccumulator:
    """Everything compare needs about one layer's input, in memory independent of the sample count.

    ``population`` covers every element of every sample; ``sample_means`` are moments of the
    per-sample channel means; ``within_sum`` adds up per-sample (spatial) variances.
    """

    population: Moments = field(default_factory=Moments)
    sample_means: Moments = field(default_factory=Moments)
    within_sum: np.ndarray | None = None
    spatial: int = 0

    def update(self, x: np.ndarray) -> None:
        """Add a batch ``x`` of shape (N, C, *spatial) with vectorized float64 reductions."""
        n, c = x.shape[0], x.shape[1]
        xs = x.reshape(n, c, -1)
        s = xs.shape[2]
        self.spatial = s
        sample_mean = xs.mean(axis=2, dtype=np.float64)  # (N, C), float64 accumulation
        # Two-pass variance: deviations from the mean rounded to x's dtype (a temporary the size
        # of x, not twice it), squared in place, summed in float64; the rounding of the shift is
        # corrected exactly: mean((x - r)^2) = var + (mean - r)^2.
        shift = sample_mean.astype(xs.dtype)
        dev = xs - shift[:, :, None]
        np.square(dev, out=dev)
        off = sample_mean - shift
        within = dev.sum(axis=2, dtype=np.float64) / s - off * off  # (N, C)
        batch_mean = sample_mean.mean(axis=0)
        between = sample_mean - batch_mean
        between_m2 = np.einsum("nc,nc->c", between, between)
        within_total = within.sum(axis=0)
        self.population.merge(float(n * s), batch_mean, s * (within_total + between_m2))
        self.sample_means.merge(float(n), batch_mean, between_m2)
        self.within_sum = within_total if self.within_sum is None else self.within_sum + within_total

    @property
    def within_var(self) -> np.ndarray:
        """Mean per-sample variance (over spatial positions); zero without spatial dims."""
        assert self.within_sum is not None
        return self.within_sum / self.sample_means.count

    @property
    def between_var(self) -> np.ndarray:
        """Variance of the per-sample means across samples (biased)."""
        return self.sample_means.var

    def expected_batch_var(self, batch_size: int) -> np.ndarray:
        """Expected biased variance a layer sees in a batch of ``batch_size`` random samples."""
        return self.within_var + (1.0 - 1.0 / batch_size) * self.between_var
