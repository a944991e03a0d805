"""Telling an input shift (other domain, other preprocessing) from stats that are wrong inside.

Nothing normalizes before the first normalization layer, so what it sees under eval propagation
is the data itself, pushed through fixed weights. Its running stats are a noisy average of the
statistics of training batches of B samples (``core/stats/running_average.py``): when they lie
outside what such an average over batches of the sample data could hold, the data is not what
the model was trained on, and re-estimating the stats on it would bake the difference into the
model. At B = 1 that average is one of a few single samples' statistics, so it is compared with
how those scatter, not with the pooled data. See docs/design.md, "The verdict".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bncheck.core.inputs.data import SampleSource
from bncheck.core.network.layers import NormLayer
from bncheck.core.network.model import Model
from bncheck.core.network.moments import LayerAccumulator
from bncheck.core.network.numerics import TINY
from bncheck.core.stats.batchsize import MIN_ROWS, Z_PLAUSIBLE
from bncheck.core.stats.running_average import AverageModel, effective_batches
from bncheck.core.stats.taps import TapCollector

# A shift must also matter: running means further than this many running std from the data's
# (median over channels), or a running variance outside this factor of what batches of B give.
MIN_MEAN_SHIFT = 0.1
VAR_SLACK = 1.5
# Stats still within this of (mean 0, var 1) were never updated: that is not an input shift.
INIT_TOL = 1e-6
# Samples the preprocessing probe runs (three short passes).
PROBE_SAMPLES = 64
# The probe trusts its fit when the first layer's input responds linearly to the data's scale
# (variance x4 when inputs double, within this relative error) ...
LINEARITY_TOL = 0.1
# ... and the fitted scale and shift reproduce the running means within this many running std.
FIT_TOL = 0.25
# Points on the log-scale grid searched for the input scale.
PROBE_GRID = 121


@dataclass(frozen=True)
class ShiftEvidence:
    """Why the first normalization layer's running stats do not describe the data."""

    layer: str
    mean_shift: float  # median over channels, in running std
    var_ratio: float  # median running_var / what a running average over batches of B reads
    batch: int  # the training batch size judged at
    score: float  # standard deviations beyond what such an average holds
    batches: float  # how many batches the running average is worth

    def describe(self) -> str:
        """One clause with the figures."""
        return (f"at {self.layer}, the first normalization layer, the data's channel means are "
                f"{self.mean_shift:.2f} running std from the running means and its variance in "
                f"batches of {self.batch} is {1 / self.var_ratio:.3g}x the running variance, "
                f"{self.score:.1f} standard deviations beyond what a running average of about "
                f"{self.batches:.3g} such batches holds")

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"layer": self.layer, "mean_shift": self.mean_shift, "var_ratio": self.var_ratio,
                "train_batch_size": self.batch, "score": self.score,
                "average_batches": self.batches}


def input_shift(layer: NormLayer, acc: LayerAccumulator, batch_size: int
                ) -> ShiftEvidence | None:
    """Evidence of an input shift at ``layer``, the first normalization layer, or None.

    ``batch_size`` is the training batch size. Stats that are not finite, negative or still at
    their initial values are broken stats, not a shift: recalibration is the fix for those.
    The accumulator must keep its sample rows.
    """
    rm, rv = layer.running_mean, layer.running_var
    mu = acc.population.mean
    if rm is None or rv is None or mu is None or not rm.size:
        return None
    if not (np.isfinite(rm).all() and np.isfinite(rv).all()) or (rv <= 0).any():
        return None
    if np.all(np.abs(rm) <= INIT_TOL) and np.all(np.abs(rv - 1.0) <= INIT_TOL):
        return None
    if acc.rows is None or acc.rows.count < MIN_ROWS:
        return None
    model = AverageModel(layer, acc.rows, acc.spatial)
    score = model.score(batch_size)
    if score.fit <= Z_PLAUSIBLE:
        return None
    _, expected_var = model.expected(batch_size)
    with np.errstate(all="ignore"):
        shift = float(np.median(np.abs(mu - rm) / np.sqrt(rv)))
        ratio = float(np.median(model.rv / np.maximum(expected_var, TINY)))
    if shift <= MIN_MEAN_SHIFT and 1.0 / VAR_SLACK <= ratio <= VAR_SLACK:
        return None
    return ShiftEvidence(layer.name, shift, ratio, batch_size, score.fit,
                         effective_batches(layer))


@dataclass(frozen=True)
class InputExpectation:
    """Per input channel: what the data has, and what the model appears to expect.

    ``expected_*`` and ``suggested_*`` are None where the first layer does not allow an estimate
    (``note`` says why). The estimate is one scale and shift for all channels.
    """

    data_mean: list[float]
    data_std: list[float]
    expected_mean: list[float] | None
    expected_std: list[float] | None
    suggested_mean: list[float] | None  # --mean/--std for an image folder that would match
    suggested_std: list[float] | None
    note: str

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"data_mean": self.data_mean, "data_std": self.data_std,
                "expected_mean": self.expected_mean, "expected_std": self.expected_std,
                "suggested_mean": self.suggested_mean, "suggested_std": self.suggested_std,
                "note": self.note}


def probe_preprocessing(model: Model, src: SampleSource, layer: NormLayer,
                        image_mean: tuple[float, ...] | None,
                        image_std: tuple[float, ...] | None) -> InputExpectation:
    """Estimate the input scale and shift that make ``layer``'s running stats fit the data.

    Before any nonlinearity, the first layer's input is ``W * x + b`` for fixed weights, so fed
    ``a * z + d`` its channel means are ``a * Mz + d * M1 + b`` and its variances
    ``a^2 Vzz + 2 a d Vz1 + d^2 V11`` (zero padding makes a constant input vary too). Four
    tapped passes over a few samples, with inputs ``z``, ``2z``, a constant 1 and ``z + 1``,
    measure those terms; the ``a`` and ``d`` that best reproduce the running stats follow.
    """
    idx = np.arange(min(PROBE_SAMPLES, len(src)))
    arrays = src.load(idx)
    z = arrays[0].astype(np.float64)
    axes = (0, *range(2, z.ndim))
    data_mean, data_std = z.mean(axis=axes), z.std(axis=axes)
    assert layer.running_mean is not None and layer.running_var is not None

    def moments(scale: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
        taps = TapCollector()
        fed = [(z * scale + shift).astype(arrays[0].dtype), *arrays[1:]]
        model.run(fed, [layer.name], taps)
        pop = taps.acc[layer.name].population
        assert pop.mean is not None
        return pop.mean, pop.var

    def plain(note: str) -> InputExpectation:
        return InputExpectation(data_mean.tolist(), data_std.tolist(), None, None, None, None, note)

    if len(arrays) > 1:
        return plain("the model has several inputs; no estimate of what it expects")
    m_z, v_zz = moments(1.0, 0.0)
    m_2z, v_2z = moments(2.0, 0.0)
    m_1, v_11 = moments(0.0, 1.0)
    _, v_z1_total = moments(1.0, 1.0)
    with np.errstate(all="ignore"):
        linear = abs(float(np.median(v_2z / (4.0 * v_zz))) - 1.0) <= LINEARITY_TOL
    if not linear:
        return plain(f"{layer.name} does not follow the input linearly; no estimate of what the "
                     "model expects")
    terms = _AffineTerms(mean_z=m_2z - m_z, bias=2.0 * m_z - m_2z, mean_1=m_1 - (2.0 * m_z - m_2z),
                         v_zz=v_zz, v_11=v_11, v_z1=0.5 * (v_z1_total - v_zz - v_11))
    a, d, misfit = terms.fit(layer.running_mean, layer.running_var)
    if misfit > FIT_TOL:
        return plain(f"no single scale and shift of the inputs reproduces the running stats of "
                     f"{layer.name} (misfit {misfit:.2f} running std)")
    expected_mean = (a * data_mean + d).tolist()
    expected_std = (abs(a) * data_std).tolist()
    suggested_mean = suggested_std = None
    if image_mean is not None and image_std is not None:
        # Images are fed as (x - mean) / std; a * that + d is (x - mean') / std'.
        c = z.shape[1]
        m = np.broadcast_to(np.asarray(image_mean, np.float64), (c,))
        s = np.broadcast_to(np.asarray(image_std, np.float64), (c,))
        suggested_std = (s / a).tolist()
        suggested_mean = (m - d * s / a).tolist()
    return InputExpectation(data_mean.tolist(), data_std.tolist(), expected_mean, expected_std,
                            suggested_mean, suggested_std,
                            f"one scale ({a:.3g}) and shift ({d:+.3g}) for all channels, fitted "
                            f"at {layer.name}")


@dataclass(frozen=True)
class _AffineTerms:
    """How the first layer's input moments depend on an input transform ``a * z + d``."""

    mean_z: np.ndarray
    bias: np.ndarray
    mean_1: np.ndarray
    v_zz: np.ndarray
    v_11: np.ndarray
    v_z1: np.ndarray

    def var(self, a: float, d: float) -> np.ndarray:
        return a * a * self.v_zz + 2.0 * a * d * self.v_z1 + d * d * self.v_11

    def best_shift(self, a: float, rm: np.ndarray, rv: np.ndarray) -> float:
        # Means are linear in d: weighted least squares, each channel in its running std.
        w = self.mean_1 / rv
        denom = float(np.sum(w * self.mean_1))
        return float(np.sum(w * (rm - a * self.mean_z - self.bias)) / denom) if denom > 0 else 0.0

    def loss(self, a: float, d: float, rm: np.ndarray, rv: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            mean_err = (a * self.mean_z + d * self.mean_1 + self.bias - rm) ** 2 / rv
            var_err = np.log(np.maximum(self.var(a, d), 1e-300) / rv) ** 2
        value = float(np.median(mean_err + var_err))
        return value if np.isfinite(value) else np.inf

    def fit(self, rm: np.ndarray, rv: np.ndarray) -> tuple[float, float, float]:
        """(a, d, misfit in running std): a search over log a, the best d for each."""
        best = (np.inf, 1.0, 0.0)
        for log_a in np.linspace(np.log(1e-3), np.log(1e3), PROBE_GRID):
            a = float(np.exp(log_a))
            d = self.best_shift(a, rm, rv)
            best = min(best, (self.loss(a, d, rm, rv), a, d))
        _, a, d = best
        # Refine around the best grid point, which is one grid step wide.
        step = (np.log(1e3) - np.log(1e-3)) / (PROBE_GRID - 1)
        for log_a in np.linspace(np.log(a) - step, np.log(a) + step, PROBE_GRID):
            a2 = float(np.exp(log_a))
            d2 = self.best_shift(a2, rm, rv)
            best = min(best, (self.loss(a2, d2, rm, rv), a2, d2))
        _, a, d = best
        with np.errstate(all="ignore"):
            misfit = float(np.median(np.abs(a * self.mean_z + d * self.mean_1 + self.bias - rm)
                                     / np.sqrt(rv)))
        return a, d, misfit
