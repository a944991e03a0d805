"""How far one way of running the model is from the reference: per-sample relative L2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bncheck.core.judgement.metrics import CHUNK
from bncheck.core.network.numerics import TINY
from bncheck.core.passes.outputs import OutputStore

# Outputs this wide or narrower are read as class scores (argmax agreement is reported).
MAX_CLASSES = 1000
# A sample's error is relative to its reference output's norm, but never to less than this share
# of the median norm: a near-empty output (an all-black image) would otherwise turn a tiny
# absolute difference into a huge relative one and dominate the mean.
NORM_FLOOR = 0.1


@dataclass(frozen=True)
class Discrepancy:
    """Per-sample relative L2 distance of one way of running the model from the reference."""

    name: str
    batch_size: int
    mean: float
    median: float
    p90: float
    argmax_agreement: float | None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"name": self.name, "batch_size": self.batch_size, "mean": self.mean,
                "median": self.median, "p90": self.p90,
                "argmax_agreement": self.argmax_agreement, "notes": list(self.notes)}


class Distance:
    """``|got - ref| / max(|ref|, floor)`` per sample, against one reference run.

    The reference norms and the floor (``NORM_FLOOR`` of their median over ``used``) are read
    once, so every run measured against this reference uses the same denominators.
    """

    def __init__(self, ref: OutputStore, used: np.ndarray) -> None:
        self.ref = ref
        self.used = used
        self.norms = np.full(ref.n, np.nan)
        for i in range(0, used.size, CHUNK):
            idx = used[i:i + CHUNK]
            self.norms[idx] = np.linalg.norm(ref.read(idx).astype(np.float64), axis=1)
        self.floor = max(NORM_FLOOR * float(np.median(self.norms[used])), TINY) \
            if used.size else TINY
        self.classes = 2 <= ref.width <= MAX_CLASSES

    def errors(self, got: OutputStore, idx: np.ndarray) -> tuple[np.ndarray, int]:
        """Each sample's error (inf where not finite), and how many agree on the argmax."""
        y, r = got.read(idx).astype(np.float64), self.ref.read(idx).astype(np.float64)
        with np.errstate(all="ignore"):
            e = np.linalg.norm(y - r, axis=1) / np.maximum(self.norms[idx], self.floor)
        agree = int((np.argmax(np.nan_to_num(y, nan=-np.inf), 1) == np.argmax(r, 1)).sum()) \
            if self.classes else 0
        return np.where(np.isfinite(e), e, np.inf), agree

    def discrepancy(self, name: str, batch_size: int, got: OutputStore,
                    idx: np.ndarray | None = None, notes: tuple[str, ...] = ()) -> Discrepancy:
        """Summary of the errors of ``got`` over ``idx`` (default: every sample used)."""
        idx = self.used if idx is None else idx
        errs = np.empty(idx.size)
        agree = 0
        for start in range(0, idx.size, CHUNK):
            e, a = self.errors(got, idx[start:start + CHUNK])
            errs[start:start + e.size] = e
            agree += a
        with np.errstate(all="ignore"):
            return Discrepancy(name, batch_size, float(np.mean(errs)), float(np.median(errs)),
                               float(np.quantile(errs, 0.9)),
                               agree / idx.size if self.classes else None, notes)
