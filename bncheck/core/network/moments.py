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


# Per-sample rows a layer keeps for the model of its running average (core/stats/running_average.py):
# enough to resample training batches from, in memory independent of the sample count.
MAX_ROWS = 4096
# Channels kept per row, evenly spaced: the model of the running average scores their typical
# deviation, which a few dozen channels measure as well as a thousand.
MAX_ROW_CHANNELS = 32


@dataclass
class SampleRows:
    """The first ``MAX_ROWS`` samples' per-channel means and spatial variances, for up to
    ``MAX_ROW_CHANNELS`` channels (``channels`` says which).

    Rows are appended in batch order, and under torchrun merged in global batch order, so one
    process and several keep the same rows (docs/design.md, "Sharding").
    """

    channels: np.ndarray | None = None
    mean: list[np.ndarray] = field(default_factory=list)
    within: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def add(self, sample_mean: np.ndarray, within: np.ndarray) -> None:
        """Add (N, C) per-sample means and spatial variances, up to the cap."""
        if self.channels is None:
            c = sample_mean.shape[1]
            self.channels = np.unique(np.linspace(0, c - 1, min(c, MAX_ROW_CHANNELS)).astype(int))
        self._append(sample_mean[:, self.channels], within[:, self.channels])

    def merge(self, other: SampleRows) -> None:
        """Append another collector's rows (the batches after these)."""
        if self.channels is None:
            self.channels = other.channels
        for mean, within in zip(other.mean, other.within, strict=True):
            self._append(mean, within)

    def _append(self, mean: np.ndarray, within: np.ndarray) -> None:
        take = min(mean.shape[0], MAX_ROWS - self.count)
        if take > 0:
            self.mean.append(mean[:take])
            self.within.append(within[:take])
            self.count += take

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, C') per-sample means and spatial variances of the kept channels."""
        assert self.mean, "no rows kept"
        return np.concatenate(self.mean), np.concatenate(self.within)


@dataclass
class LayerAccumulator:
    """Everything compare needs about one layer's input, in memory independent of the sample count.

    ``population`` covers every element of every sample; ``sample_means`` are moments of the
    per-sample channel means; ``within_sum`` adds up per-sample (spatial) variances. ``rows`` are
    kept for the layers nearest the input in the eval pass, where the training batch size and an
    input shift are read from them.
    """

    population: Moments = field(default_factory=Moments)
    sample_means: Moments = field(default_factory=Moments)
    within_sum: np.ndarray | None = None
    spatial: int = 0
    rows: SampleRows | None = None

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
        if self.rows is not None:
            self.rows.add(sample_mean, within)

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
        if self.rows is not None and other.rows is not None:
            self.rows.merge(other.rows)

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
