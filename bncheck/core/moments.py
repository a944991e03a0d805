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
class Spread:
    """How per-sample statistics scatter from sample to sample, per channel: power sums of each
    sample's spatial variance ``w`` and of its mean's distance ``d`` from a fixed ``center``.

    The batch-size estimate needs them for its standard errors (docs/design.md, "The training
    batch size"). The center is the layer's running mean, the same in every process, so sums
    from several processes add up exactly; it is near the data's mean wherever the estimate
    trusts a layer, which keeps the power sums well conditioned.
    """

    center: np.ndarray
    count: float = 0.0
    w: np.ndarray | float = 0.0
    w2: np.ndarray | float = 0.0
    d2: np.ndarray | float = 0.0
    d4: np.ndarray | float = 0.0
    wd2: np.ndarray | float = 0.0

    def add(self, sample_mean: np.ndarray, within: np.ndarray) -> None:
        """Add (N, C) per-sample means and spatial variances."""
        d2 = (sample_mean - self.center) ** 2
        self.count += sample_mean.shape[0]
        self.w = self.w + within.sum(axis=0)
        self.w2 = self.w2 + (within * within).sum(axis=0)
        self.d2 = self.d2 + d2.sum(axis=0)
        self.d4 = self.d4 + (d2 * d2).sum(axis=0)
        self.wd2 = self.wd2 + (within * d2).sum(axis=0)

    def merge(self, other: Spread) -> None:
        """Add another process's sums (same center)."""
        self.count += other.count
        self.w, self.w2 = self.w + other.w, self.w2 + other.w2
        self.d2, self.d4, self.wd2 = self.d2 + other.d2, self.d4 + other.d4, self.wd2 + other.wd2

    def var_of(self, a: float) -> np.ndarray:
        """Per channel, the variance over samples of ``w + a * d^2``."""
        n = max(self.count, 1.0)
        ew, ed2 = np.asarray(self.w) / n, np.asarray(self.d2) / n
        var_w = np.asarray(self.w2) / n - ew * ew
        var_d2 = np.asarray(self.d4) / n - ed2 * ed2
        cov = np.asarray(self.wd2) / n - ew * ed2
        return np.maximum(var_w + a * a * var_d2 + 2.0 * a * cov, 0.0)


@dataclass
class LayerAccumulator:
    """Everything compare needs about one layer's input, in memory independent of the sample count.

    ``population`` covers every element of every sample; ``sample_means`` are moments of the
    per-sample channel means; ``within_sum`` adds up per-sample (spatial) variances. ``spread``
    is kept when the accumulator is given a center (the eval pass that estimates the training
    batch size).
    """

    population: Moments = field(default_factory=Moments)
    sample_means: Moments = field(default_factory=Moments)
    within_sum: np.ndarray | None = None
    spatial: int = 0
    spread: Spread | None = None

    def add(self, mean: np.ndarray, m2: np.ndarray, spatial: int) -> None:
        """Add a batch summarized per sample and channel: (N, C) means and sums of squared
        deviations, over ``spatial`` values each; merged in float64."""
        n = mean.shape[0]
        s = spatial
        self.spatial = s
        sample_mean = mean.astype(np.float64)
        within = m2.astype(np.float64) / s  # (N, C)
        batch_mean = sample_mean.mean(axis=0)
        between = sample_mean - batch_mean
        between_m2 = np.einsum("nc,nc->c", between, between)
        within_total = within.sum(axis=0)
        self.population.merge(float(n * s), batch_mean, s * (within_total + between_m2))
        self.sample_means.merge(float(n), batch_mean, between_m2)
        self.within_sum = within_total if self.within_sum is None else self.within_sum + within_total
        if self.spread is not None:
            self.spread.add(sample_mean, within)

    def merge(self, other: LayerAccumulator) -> None:
        """Fold in another accumulator of the same layer (another process's batches)."""
        for mine, theirs in ((self.population, other.population),
                             (self.sample_means, other.sample_means)):
            if theirs.mean is not None and theirs.m2 is not None:
                mine.merge(theirs.count, theirs.mean, theirs.m2)
        if other.within_sum is not None:
            self.within_sum = other.within_sum if self.within_sum is None \
                else self.within_sum + other.within_sum
        self.spatial = other.spatial or self.spatial
        if self.spread is not None and other.spread is not None:
            self.spread.merge(other.spread)

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
