"""Task metrics from the user's labels or targets: accuracy, or mean absolute error."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from bncheck.core.passes.outputs import OutputStore
from bncheck.errors import BncheckError, reading

# Rows read from an output store at a time.
CHUNK = 256


class MetricKind(StrEnum):
    """What the truth file holds."""

    ACCURACY = "accuracy"  # --labels: class ids
    MAE = "mae"  # --targets: expected outputs


@dataclass(frozen=True)
class Truth:
    """Labels (N,) or targets (N, D), aligned with the samples."""

    kind: MetricKind
    values: np.ndarray
    path: Path

    @property
    def higher_is_better(self) -> bool:
        """Accuracy goes up, error goes down."""
        return self.kind is MetricKind.ACCURACY

    def score(self, store: OutputStore, index: np.ndarray) -> float:
        """The metric of the outputs in ``store`` over the samples ``index``."""
        total = 0.0
        for start in range(0, index.size, CHUNK):
            idx = index[start:start + CHUNK]
            out = store.read(idx).astype(np.float64)
            want = self.values[idx]
            if self.kind is MetricKind.ACCURACY:
                total += float((np.argmax(np.nan_to_num(out, nan=-np.inf), 1) == want).sum())
            else:
                total += float(np.abs(out - want.reshape(idx.size, -1)).mean(axis=1).sum())
        return total / max(index.size, 1)

    def worse(self, value: float, than: float) -> bool:
        """Whether ``value`` is worse than ``than`` (NaN is always worse)."""
        if not np.isfinite(value):
            return True
        return value < than if self.higher_is_better else value > than

    def fmt(self, value: float) -> str:
        """As people read it: a percentage, or an error."""
        if not np.isfinite(value):
            return "nan"
        return f"{100 * value:.1f}%" if self.kind is MetricKind.ACCURACY else f"{value:.4g}"


def load_truth(path: Path, kind: MetricKind, n_samples: int) -> Truth:
    """Read ``--labels``/``--targets`` (.npy, .npz with one array, or text) for ``n_samples``."""
    option = _option(kind)
    if not path.is_file():
        raise BncheckError(f"{option} {path}: no such file")
    suffix = path.suffix.lower()
    kind_of = {".npz": ".npz", ".npy": ".npy"}.get(suffix, "a text file of numbers")
    with reading(path, kind_of, option=option):
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise BncheckError(f"{option} {path}: holds {len(z.files)} arrays; give one")
                values = z[z.files[0]]
        elif suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = np.loadtxt(path, ndmin=1)
    return truth_from_array(values, kind, n_samples, path)


def truth_from_array(values: np.ndarray, kind: MetricKind, n_samples: int,
                     origin: Path = Path("<array>")) -> Truth:
    """Labels or targets from an array, one entry per sample in sample order."""
    option = f"{_option(kind)} {origin}"
    if values.ndim == 0 or values.shape[0] < n_samples:
        got = 0 if values.ndim == 0 else values.shape[0]
        raise BncheckError(f"{option}: {got} entries for {n_samples} samples; give one per "
                           "sample, in the same order")
    values = values[:n_samples]
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype,
                                                                   np.complexfloating):
        raise BncheckError(f"{option}: expected numbers, got {values.dtype}")
    if kind is MetricKind.ACCURACY:
        if values.ndim != 1 or not np.all(np.isfinite(values)) or \
                np.any(values != np.round(values)):
            raise BncheckError(f"{option}: expected one integer class id per sample")
        return Truth(kind, values.astype(np.int64), origin)
    return Truth(kind, values.astype(np.float64).reshape(n_samples, -1), origin)


def _option(kind: MetricKind) -> str:
    return "--labels" if kind is MetricKind.ACCURACY else "--targets"
