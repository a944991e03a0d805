"""compare: run the model as trained (the reference) and each candidate fix on the same samples.

The reference is the network as it was trained: normalization layers on batch statistics at the
training batch size, running stats untouched, everything else in eval mode (DESIGN.md §2).
Re-batching the reference gives the noise floor; a candidate within tolerance of the reference
behaves as trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bncheck.backends.base import Model
from bncheck.core.batchsize import BatchSizeEstimate, estimate_batch_size
from bncheck.core.data import SampleSource, batches
from bncheck.core.diagnosis import LayerDivergence, divergence
from bncheck.core.layers import NormLayer
from bncheck.core.moments import Moments
from bncheck.core.options import RewriteMode
from bncheck.core.outputs import OutputStore
from bncheck.core.progress import NoProgress, Progress
from bncheck.core.taps import TapCollector
from bncheck.core.tolerance import tolerance_for

SEED = 0
MAX_CLASSES = 1000


@dataclass
class Discrepancy:
    """Per-sample relative L2 distance of one way of running the model from the reference."""

    name: str
    batch_size: int
    mean: float
    median: float
    p90: float
    argmax_agreement: float | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"name": self.name, "batch_size": self.batch_size, "mean": self.mean,
                "median": self.median, "p90": self.p90,
                "argmax_agreement": self.argmax_agreement, "notes": self.notes}


@dataclass
class LayerReport:
    """One batch-dependent layer: divergence under eval and under reference propagation."""

    layer: NormLayer
    order: int
    spatial: bool
    eval: LayerDivergence
    reference: LayerDivergence


@dataclass
class Comparison:
    """Everything compare measured; the verdict is derived in ``verdict.py``."""

    n_samples: int
    n_used: int
    batch_size: int
    train_batch: BatchSizeEstimate
    noise_floor: Discrepancy | None
    candidates: dict[str, Discrepancy]
    layers: list[LayerReport]
    forward_passes: int
    notes: list[str]


def needs_stats(layer: NormLayer) -> bool:
    """Whether eval mode normalizes this layer differently from training."""
    return layer.uses_running_stats and layer.momentum_note != "frozen"


def compare(model: Model, src: SampleSource, *, batch_size: int, train_batch_size: int | None,
            progress: Progress | None = None) -> Comparison:
    """Measure eval mode and every candidate against the reference on ``src``."""
    progress = progress or NoProgress()
    layers = {layer.name: layer for layer in model.layers() if needs_stats(layer)}
    n = len(src)
    notes: list[str] = []
    if not layers:
        unused = BatchSizeEstimate(batch_size, "unused", "no batch-dependent layer")
        return Comparison(n, n, batch_size, unused, None, {}, [], 0,
                          ["no layer normalizes with running statistics: eval mode is the "
                           "trained behaviour"])
    runner = _Runner(src, progress)
    eval_taps = TapCollector()
    eval_store = runner.run(model, "eval", batch_size, n, taps=list(layers), on_tap=eval_taps)
    order = eval_taps.order
    spatial = {name: eval_taps.acc[name].spatial > 1 for name in order}
    if train_batch_size is not None:
        train = BatchSizeEstimate(train_batch_size, "option", "from --train-batch-size")
    else:
        # BatchNorm on (N, C) cannot train at batch size 1 (one value per channel).
        train = estimate_batch_size([(layers[k], eval_taps.acc[k]) for k in order], n,
                                    min_batch=1 if all(spatial.values()) else 2)
    b = train.value
    if b > max(1, n // 2):
        capped = max(1, n // 2)
        notes.append(f"training batch size {b} is over half the {n} samples; the reference uses "
                     f"{capped} so it can be re-batched")
        b = capped
    n_used = n - n % b
    if n_used < n:
        notes.append(f"{n - n_used} sample(s) left out so every reference batch has {b}")

    ref_model = model.apply(RewriteMode.REFERENCE).model
    ref_taps = TapCollector()
    ref = runner.run(ref_model, "reference", b, n_used, taps=list(layers), on_tap=ref_taps)
    cands: dict[str, Discrepancy] = {"eval": _discrepancy("eval", batch_size, eval_store, ref,
                                                          n_used)}
    eval_store.close()
    noise = _noise_floor(runner, ref_model, ref, b, n_used)
    if cands["eval"].mean <= tolerance_for(noise.mean):
        # Eval mode already behaves as trained: no fix to choose, so no candidate runs.
        notes.append("eval mode is within tolerance: the candidate fixes were not run")
    else:
        population = {name: acc.population for name, acc in ref_taps.acc.items()}
        cands.update(_candidates(runner, model, ref, population, spatial, batch_size, b, n_used,
                                 cands["eval"], notes))
    ref.close()
    reports = [
        LayerReport(layers[name], i, spatial[name],
                    divergence(layers[name], eval_taps.acc[name], b),
                    divergence(layers[name], ref_taps.acc[name], b))
        for i, name in enumerate(order)
    ]
    return Comparison(n, n_used, batch_size, train, noise, cands, reports, runner.passes, notes)


def _candidates(runner: _Runner, model: Model, ref: OutputStore, population: dict[str, Moments],
                spatial: dict[str, bool], batch_size: int, b: int, n_used: int,
                eval_run: Discrepancy, notes: list[str]) -> dict[str, Discrepancy]:
    """Each fix, run and measured against the reference."""
    out = {"recalibrate": runner.candidate(model, RewriteMode.RECALIBRATE, population, ref,
                                           batch_size, n_used)}
    if any(spatial.values()):
        out["instance-norm"] = runner.candidate(model, RewriteMode.INSTANCE_NORM, None, ref,
                                                batch_size, n_used)
    else:
        notes.append("no batch-dependent layer has spatial dims: instance-norm does not apply")
    if batch_size == b and all(spatial.values()):
        # Identical to the reference by construction: same graph, same batches.
        agreement = None if eval_run.argmax_agreement is None else 1.0
        out["batch-stats"] = Discrepancy("batch-stats", b, 0.0, 0.0, 0.0, agreement)
    else:
        out["batch-stats"] = runner.candidate(model, RewriteMode.BATCH_STATS, None, ref,
                                              batch_size, n_used)
    return out


def _noise_floor(runner: _Runner, ref_model: Model, ref: OutputStore, b: int,
                 n_used: int) -> Discrepancy:
    if b == 1:
        return Discrepancy("noise-floor", 1, 0.0, 0.0, 0.0, None,
                           ["at batch size 1 the reference does not depend on batch composition"])
    order = np.random.default_rng(SEED).permutation(n_used)
    rebatched = runner.run(ref_model, "noise floor", b, n_used, order=order)
    d = _discrepancy("noise-floor", b, rebatched, ref, n_used)
    rebatched.close()
    return d


class _Runner:
    """Streams samples through a model, parks outputs on disk, counts forward passes."""

    def __init__(self, src: SampleSource, progress: Progress) -> None:
        self.src = src
        self.progress = progress
        self.passes = 0

    def run(self, model: Model, label: str, batch_size: int, n: int, *,
            taps: list[str] | None = None, on_tap: TapCollector | None = None,
            order: np.ndarray | None = None) -> OutputStore:
        store = OutputStore(n)
        self.passes += 1
        self.progress.start(label, n)
        idx_all = np.arange(n) if order is None else order
        for idx, arrays in batches(self.src, batch_size, idx_all):
            out = model.run(arrays, taps or (), on_tap)
            store.write(idx, out)
            self.progress.advance(idx.size)
        self.progress.finish()
        return store

    def candidate(self, model: Model, mode: RewriteMode, stats: dict[str, Moments] | None,
                  ref: OutputStore, batch_size: int, n: int) -> Discrepancy:
        result = model.apply(mode, stats)
        store = self.run(result.model, mode.value, batch_size, n)
        d = _discrepancy(mode.value, batch_size, store, ref, n)
        d.notes.extend(result.notes)
        store.close()
        return d


def _discrepancy(name: str, batch_size: int, got: OutputStore, ref: OutputStore,
                 n: int) -> Discrepancy:
    errs = np.empty(n)
    agree = 0
    classes = 2 <= ref.width <= MAX_CLASSES
    step = 256
    for start in range(0, n, step):
        idx = np.arange(start, min(n, start + step))
        y, r = got.read(idx).astype(np.float64), ref.read(idx).astype(np.float64)
        with np.errstate(all="ignore"):
            e = np.linalg.norm(y - r, axis=1) / np.maximum(np.linalg.norm(r, axis=1), 1e-12)
        errs[idx] = np.where(np.isfinite(e), e, np.inf)
        if classes:
            agree += int((np.argmax(np.nan_to_num(y, nan=-np.inf), 1) == np.argmax(r, 1)).sum())
    with np.errstate(all="ignore"):
        return Discrepancy(name, batch_size, float(np.mean(errs)), float(np.median(errs)),
                           float(np.quantile(errs, 0.9)), agree / n if classes else None)

