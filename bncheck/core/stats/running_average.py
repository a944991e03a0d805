"""Running statistics as what they are: a noisy average of training batches' statistics.

A BatchNorm layer's ``running_mean`` and ``running_var`` are an exponential average (torch
momentum m: the newest batch weighs m, the one before m(1 - m), ...) or, with momentum None, a
cumulative one, of the statistics of the batches it was trained on. At batch size 1 and torch's
momentum 0.1 that is an average of about 19 single samples' statistics, which scatters far from
any population value when samples differ; at momentum 0.9 (Keras' 0.1) it is about the last
sample's. So the question "could these running statistics have come from batches of B samples
like these?" has an answer only as a distribution.

``AverageModel`` builds that distribution from the sample data's per-sample statistics
(``SampleRows``): each replicate draws a population like the samples' (a bootstrap: the samples
are not the training set), then training batches of B from it, and runs the layer's own
recursion over them. The layer's **score** at B is two z-scores: a goodness of fit (how far the
observed running statistics lie from the replicates' centre, against how far the replicates
themselves lie) and a likelihood ratio (how much better another batch size explains them than
B does, against how much better one explains B's own replicates). See
docs/design.md, "The training batch size" and "The verdict".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from bncheck.core.network.layers import MomentumNote, NormLayer
from bncheck.core.network.moments import SampleRows
from bncheck.core.network.numerics import TINY

# Momentum assumed where the file does not say (torch's default), in torch's convention.
DEFAULT_MOMENTUM = 0.1
# Replicate running averages per batch size.
REPLICATES = 128
# The newest batches are drawn sample by sample; all older ones together hold a weight small
# per batch, and their sum is taken as Gaussian.
EXACT_BATCHES = 16
# A batch of B samples is drawn as min(B, ROWS_PER_BATCH) rows whose deviation from the
# population is scaled to a batch of B: exact up to ROWS_PER_BATCH, and in mean and variance
# (with the samples' cross-channel correlation) beyond, where batches are nearly Gaussian.
ROWS_PER_BATCH = 8
# The weights move while a running average runs, so each channel's running statistics lag what
# the final weights give by an amount no sample shows: each replicate's channels are moved by
# this much, relatively (log variance; mean in running std). docs/design.md says why 20%.
DRIFT = 0.2
# Running statistics are never known better than this, relatively (float32 sums): a floor
# under the replicates' spread.
FLOOR_REL = 0.01
SEED = 20240
# The fewest degrees of freedom a statistic's replicates are matched to (one channel: 1), and
# the smallest mean taken for them: a likelihood ratio that small (per feature) is no evidence.
MIN_DOF = 0.5
MIN_STAT = 0.01


@dataclass(frozen=True)
class AverageWeights:
    """The weights of the batches in a running average, newest first: ``exact`` for the newest,
    and the total and squared total of all older ones."""

    exact: np.ndarray
    tail: float
    tail_sq: float

    @property
    def variance_factor(self) -> float:
        """Variance of the running average over that of one batch's statistic."""
        return float(np.sum(self.exact ** 2)) + self.tail_sq


def average_weights(layer: NormLayer) -> AverageWeights:
    """The weights of ``layer``'s running average: exponential with its momentum (torch's
    default where the file does not say), or cumulative over ``num_batches_tracked`` batches."""
    if layer.momentum_note is MomentumNote.CUMULATIVE and layer.num_batches_tracked:
        t = int(layer.num_batches_tracked)
        k = min(t, EXACT_BATCHES)
        return AverageWeights(np.full(k, 1.0 / t), (t - k) / t, (t - k) / (t * t))
    m = float(layer.momentum) if layer.momentum else DEFAULT_MOMENTUM
    m = min(max(m, 1e-6), 1.0)
    keep = 1.0 - m
    exact = m * keep ** np.arange(EXACT_BATCHES)
    tail = keep ** EXACT_BATCHES
    tail_sq = m * m * keep ** (2 * EXACT_BATCHES) / (1.0 - keep * keep) if keep < 1.0 else 0.0
    return AverageWeights(exact, tail, tail_sq)


def effective_batches(layer: NormLayer) -> float:
    """How many batches the running average is worth: 1 / its variance factor (about
    (2 - m) / m for torch momentum m)."""
    return 1.0 / average_weights(layer).variance_factor


@dataclass(frozen=True)
class Score:
    """How typical a layer's running statistics are of an average over batches of B.

    ``mean`` and ``var`` are goodness-of-fit z-scores: how far the observed running means and
    log running variances lie from the replicates' centre, against how far the replicates
    themselves lie (positive: further). ``relative`` is a likelihood-ratio z-score: how much
    better another batch size explains the observation than B does, against how much better
    one explains B's own replicates. ``loglik`` is the Gaussian log-likelihood per channel.
    """

    batch: int
    mean: float
    var: float
    loglik: float
    relative: float

    @property
    def fit(self) -> float:
        """The goodness-of-fit z: above 3, no average over batches of B holds the observation."""
        return max(self.mean, self.var)

    @property
    def value(self) -> float:
        """The larger z-score: 3 is rare (one-sided 99.9%), below it is plausible."""
        return max(self.fit, self.relative)


@dataclass(frozen=True)
class _Replicates:
    """One batch size's replicate running statistics as features (running means, then log
    running variances), with their centre and spread."""

    batch: int
    features: np.ndarray  # (K, F)
    centre: np.ndarray  # (F,)
    spread: np.ndarray  # (F,)


class AverageModel:
    """Replicate running averages of one layer, at any training batch size, from sample rows,
    and how typical the layer's observed running statistics are among them.

    Draws are fixed by ``SEED``, so the same rows always give the same scores, in one process
    or several.
    """

    def __init__(self, layer: NormLayer, rows: SampleRows, spatial: int) -> None:
        assert layer.running_mean is not None and layer.running_var is not None
        assert rows.channels is not None
        self.layer = layer
        self.mean_rows, self.within_rows = rows.arrays()
        self.spatial = spatial
        self.rm = layer.running_mean[rows.channels]
        self.rv = layer.running_var[rows.channels]
        self.weights = average_weights(layer)

    @cached_property
    def _draws(self) -> tuple[np.ndarray, ...]:
        """Per replicate: its population's moments and the newest batches' row means.

        Returns (mu, q_bar, var_m, var_q, wdm, wdq, wdm2, z) where, per replicate and channel,
        ``mu`` is the population mean, ``q = w + (m - mu)^2`` the sample's contribution to a
        batch variance, ``q_bar`` its mean, ``var_m``/``var_q`` the variances of m and q over the
        population. With ``dm``/``dq`` the means over the first r rows of each drawn batch of
        (m - mu) and (q - q_bar), ``wdm``, ``wdq`` and ``wdm2`` (replicate, r, channel) are the
        newest batches' weighted sums of dm, dq and dm^2: all a running average needs of them.
        ``z`` is four standard normals per replicate and channel, two for the older batches and
        two for the drift.
        """
        w = self.within_rows
        # Centred, so the power sums below stay well conditioned under a large offset.
        m = self.mean_rows - self.mean_rows.mean(axis=0)
        n = m.shape[0]
        rng = np.random.default_rng(SEED)
        pop = rng.integers(0, n, (REPLICATES, n))
        # How often each sample is in each replicate's population: its moments are then
        # weighted sums, with no (replicate, sample, channel) array.
        flat = (np.arange(REPLICATES)[:, None] * n + pop).ravel()
        counts = np.bincount(flat, minlength=REPLICATES * n).reshape(REPLICATES, n) / n
        a = w + m * m  # q = a - 2 m mu + mu^2
        e_m, e_a = counts @ m, counts @ a
        e_mm, e_aa, e_am = counts @ (m * m), counts @ (a * a), counts @ (a * m)
        mu = e_m
        var_m = np.maximum(e_mm - mu * mu, 0.0)
        q_bar = e_a - mu * mu
        # E[q^2] from the power sums of a and m about this replicate's mean.
        e_qq = (e_aa + 4.0 * mu * mu * e_mm + mu ** 4 - 4.0 * mu * e_am + 2.0 * mu * mu * e_a
                - 4.0 * mu ** 3 * e_m)
        var_q = np.maximum(e_qq - q_bar * q_bar, 0.0)
        k = len(self.weights.exact)
        pick = rng.integers(0, n, (REPLICATES, k * ROWS_PER_BATCH))
        rows = np.take_along_axis(pop, pick, axis=1)  # sample indices, (K, k * R)
        bm = (m[rows] - mu[:, None, :]).reshape(REPLICATES, k, ROWS_PER_BATCH, -1)
        bq = (w[rows] + (m[rows] - mu[:, None, :]) ** 2 - q_bar[:, None, :]).reshape(
            REPLICATES, k, ROWS_PER_BATCH, -1)
        count = np.arange(1, ROWS_PER_BATCH + 1)[None, None, :, None]
        dm = np.cumsum(bm, axis=2) / count
        dq = np.cumsum(bq, axis=2) / count
        wts = self.weights.exact[None, :, None, None]
        z = rng.standard_normal((4, REPLICATES, m.shape[1]))
        return (mu + self.mean_rows.mean(axis=0), q_bar, var_m, var_q, (wts * dm).sum(axis=1),
                (wts * dq).sum(axis=1), (wts * dm * dm).sum(axis=1), z)

    def replicates(self, batches: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(sizes, K, C') running means and running variances that training at each batch size
        of ``batches`` on data like the samples leaves, one row per replicate. Every size draws
        the same rows, so all are computed at once."""
        mu, q_bar, var_m, var_q, wdm, wdq, wdm2, z = self._draws
        b = np.asarray(batches, np.float64)[:, None, None]  # (S, 1, 1)
        r = np.minimum(np.asarray(batches), ROWS_PER_BATCH) - 1
        scale = np.sqrt((r[:, None, None] + 1.0) / b)
        values = b * self.spatial
        # torch stores unbiased batch variances, Keras biased ones.
        bessel = values / np.maximum(values - 1.0, 1.0) if self.layer.unbiased_var else 1.0
        wts = self.weights
        # Sum over the newest batches of w_t (mu + s dm_t) and w_t (q_bar + s dq_t - s^2 dm_t^2),
        # a batch of B being r rows whose deviation is scaled by s = sqrt(r / B).
        exact = float(wts.exact.sum())
        run_mean = exact * mu + scale * np.moveaxis(wdm[:, r, :], 1, 0)
        run_var = bessel * (exact * q_bar + scale * np.moveaxis(wdq[:, r, :], 1, 0)
                            - scale * scale * np.moveaxis(wdm2[:, r, :], 1, 0))
        # The older batches: their weighted sum, Gaussian about its expectation.
        tail_sd = np.sqrt(wts.tail_sq / b)
        run_mean += wts.tail * mu + tail_sd * np.sqrt(var_m) * z[0]
        run_var += bessel * (wts.tail * (q_bar - var_m / b) + tail_sd * np.sqrt(var_q) * z[1])
        run_var = np.maximum(run_var, TINY)
        run_mean += DRIFT * np.sqrt(run_var) * z[2]
        return run_mean, run_var * np.exp(DRIFT * z[3])

    def expected(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The replicates' median running mean and running variance at ``batch``, per kept
        channel: what the layer's running statistics would typically read."""
        run_mean, run_var = self.replicates([batch])
        return np.median(run_mean[0], axis=0), np.median(run_var[0], axis=0)

    def _features(self, batches: Sequence[int]) -> list[_Replicates]:
        run_mean, run_var = self.replicates(batches)
        features = np.concatenate([run_mean, np.log(run_var)], axis=2)  # (S, K, F)
        floor = np.concatenate([FLOOR_REL * np.sqrt(np.maximum(self.rv, TINY)),
                                np.full(self.rv.shape, FLOOR_REL)])
        centre = np.median(features, axis=1)
        spread = np.maximum(features.std(axis=1), floor)
        return [_Replicates(b, features[i], centre[i], spread[i]) for i, b in enumerate(batches)]

    @cached_property
    def _observed(self) -> np.ndarray:
        return np.concatenate([self.rm, np.log(np.maximum(self.rv, TINY))])

    def _fit(self, reps: _Replicates, relative: float = 0.0) -> Score:
        c = self.rm.size
        x, rep = self._observed, reps.features
        z_mean = _upper_z(*_deviation(x[:c], rep[:, :c], reps.centre[:c], reps.spread[:c]))
        z_var = _upper_z(*_deviation(x[c:], rep[:, c:], reps.centre[c:], reps.spread[c:]))
        return Score(reps.batch, z_mean, z_var, float(_loglik_table(x[None, :], [reps])[0, 0]),
                     relative)

    def score(self, batch: int) -> Score:
        """How well an average over batches of ``batch`` holds the observed running statistics
        (goodness of fit only: ``relative`` is 0)."""
        return self._fit(self._features([batch])[0])

    def scores(self, batches: list[int]) -> dict[int, Score]:
        """Every batch size's score, the likelihood-ratio test against the others included.

        The statistic is how much better the most likely of ``batches`` explains the observation
        than B does; its distribution under B comes from B's own replicates, so channels that
        move together count once, as in the goodness of fit.
        """
        reps = self._features(batches)
        # Every size's replicates under every size's model at once: (sizes x K, sizes).
        table = _loglik_table(np.concatenate([r.features for r in reps]), reps)
        fits = _loglik_table(self._observed[None, :], reps)[0]
        best = float(fits.max())
        out = {}
        for i, r in enumerate(reps):
            rows = table[i * REPLICATES:(i + 1) * REPLICATES]
            null = rows.max(axis=1) - rows[:, i]
            out[r.batch] = self._fit(r, _upper_z(best - float(fits[i]), null))
        return out


def _loglik_table(x: np.ndarray, reps: list[_Replicates]) -> np.ndarray:
    """The Gaussian log-likelihood per feature, averaged, of each row of ``x`` (N, F) under each
    of ``reps``: (N, len(reps)), the square expanded into matrix products."""
    inv = np.stack([1.0 / (r.spread * r.spread) for r in reps])  # (R, F)
    centre = np.stack([r.centre for r in reps])
    f = x.shape[1]
    quad = (x * x) @ inv.T - 2.0 * x @ (centre * inv).T + np.sum(centre * centre * inv, axis=1)
    return -0.5 * quad / f - np.stack([np.log(r.spread) for r in reps]).mean(axis=1)


def _deviation(observed: np.ndarray, replicates: np.ndarray, centre: np.ndarray,
               spread: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean squared standardized deviation from the centre of the observed vector, and of
    each replicate."""
    d_obs = float(np.mean(((observed - centre) / spread) ** 2))
    return d_obs, np.mean(((replicates - centre) / spread) ** 2, axis=1)


def _upper_z(stat: float, null: np.ndarray) -> float:
    """How far in the upper tail of ``null``'s distribution ``stat`` lies, as a normal z.

    ``null`` (a non-negative statistic's replicates) is matched to a scaled chi-square by its
    mean and variance (Satterthwaite: where channels move together it has fewer degrees of
    freedom than channels, so they are not counted as independent evidence), and the tail is
    taken to z by Wilson and Hilferty's cube root.
    """
    mean = max(float(null.mean()), MIN_STAT)
    h = max(2.0 * mean * mean / max(float(null.var()), TINY), MIN_DOF)
    k = 2.0 / (9.0 * h)
    return ((max(stat, 0.0) / mean) ** (1.0 / 3.0) - (1.0 - k)) / math.sqrt(k)
