"""compare: run the model as trained (the reference) and each candidate fix on the same samples.

The reference is the network as it was trained: normalization layers on batch statistics at the
training batch size, running stats untouched, everything else in eval mode.
Re-batching the reference gives the noise floor; a candidate within tolerance of the reference
behaves as trained. See docs/design.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from bncheck.core.batchsize import BatchSizeEstimate, BatchSizeSource
from bncheck.core.collective import Collective
from bncheck.core.data import SampleSource
from bncheck.core.diagnosis import LayerDivergence, divergence
from bncheck.core.layers import NormLayer
from bncheck.core.metrics import CHUNK, Truth
from bncheck.core.model import LayerShapes, Model
from bncheck.core.moments import Moments
from bncheck.core.numerics import TINY
from bncheck.core.options import RewriteMode
from bncheck.core.outputs import OutputStore
from bncheck.core.progress import NoProgress, Progress
from bncheck.core.reference import SHUFFLE_SEED, plan_reference
from bncheck.core.runner import Loader, Runner, serial_loader
from bncheck.core.shift import InputExpectation, ShiftEvidence, input_shift, probe_preprocessing
from bncheck.core.taps import TapCollector
from bncheck.core.tolerance import MAX_TOLERANCE, tolerance_for

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


@dataclass(frozen=True)
class LayerReport:
    """One batch-dependent layer: divergence under eval and under reference propagation."""

    layer: NormLayer
    order: int
    spatial: bool
    eval: LayerDivergence
    reference: LayerDivergence


@dataclass(frozen=True)
class Measurements:
    """Everything compare measured; the verdict is derived in ``verdict.py``."""

    n_samples: int
    n_used: int
    batch_size: int
    train_batch: BatchSizeEstimate
    noise_floor: Discrepancy | None
    candidates: Mapping[str, Discrepancy]
    layers: tuple[LayerReport, ...]
    forward_passes: int
    notes: tuple[str, ...]
    reference_batches: int = 0
    precision: Mapping[str, object] | None = None
    truth: Truth | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)  # by run name, with ``truth``
    shift: ShiftEvidence | None = None
    expectation: InputExpectation | None = None


def compare(model: Model, src: SampleSource, *, batch_size: int, train_batch_size: int | None,
            truth: Truth | None = None,
            image_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
            progress: Progress | None = None, collective: Collective | None = None,
            loader: Loader = serial_loader) -> Measurements:
    """Measure eval mode and every candidate against the reference on ``src``.

    ``truth`` adds the task metric of each run; ``image_norm`` is the (mean, std) an image folder
    was normalized with, so a preprocessing fix can be given as --mean/--std.
    """
    progress = progress or NoProgress()
    layers = {layer.name: layer for layer in model.layers() if layer.needs_stats}
    n = len(src)
    if not layers:
        unused = BatchSizeEstimate(batch_size, BatchSizeSource.UNUSED, "no batch-dependent layer")
        return Measurements(n, n, batch_size, unused, None, {}, (), 0,
                            ("no layer normalizes with running statistics: eval mode is the "
                             "trained behaviour, and there is nothing to compare",))
    runner = Runner(src, progress, collective, loader)
    eval_taps = TapCollector()
    eval_store = runner.run(model, "eval", batch_size, np.arange(n), taps=list(layers),
                            on_tap=eval_taps)
    order = eval_taps.order
    spatial = {name: eval_taps.acc[name].spatial > 1 for name in order}
    plan = plan_reference(eval_taps, layers, n, train_batch_size, model.max_batch)
    b, used = plan.batch, plan.used
    notes = [*model.notes, *plan.notes]

    shapes = eval_taps.shapes
    ref_model = model.apply(RewriteMode.REFERENCE, shapes=shapes).model
    ref_taps = TapCollector()
    ref = runner.run(ref_model, "reference", b, used, taps=list(layers), on_tap=ref_taps)
    cands: dict[str, Discrepancy] = {"eval": _discrepancy("eval", batch_size, eval_store, ref,
                                                          used)}
    metrics = {} if truth is None else {"eval": truth.score(eval_store, used)}
    eval_store.close()
    noise = _noise_floor(runner, ref_model, ref, b, used)
    tol = tolerance_for(noise.mean)
    if tol > MAX_TOLERANCE:
        notes.append("the reference moves too much with batch composition to judge against: "
                     "the candidate fixes were not run")
    elif cands["eval"].mean <= tol:
        # Eval mode already behaves as trained: no fix to choose, so no candidate runs.
        notes.append("eval mode is within tolerance: the candidate fixes were not run")
    else:
        population = {name: acc.population for name, acc in ref_taps.acc.items()}
        for d, metric in _candidates(runner, model, ref, population, shapes, batch_size, b, used,
                                     cands["eval"], notes, truth):
            cands[d.name] = d
            if metric is not None:
                metrics[d.name] = metric
    ref.close()
    reports = tuple(
        LayerReport(layers[name], i, spatial[name],
                    divergence(layers[name], eval_taps.acc[name], b),
                    divergence(layers[name], ref_taps.acc[name], b))
        for i, name in enumerate(order)
    )
    dropout = model.dropout_layers()
    if dropout:
        notes.append(f"the model has {len(dropout)} Dropout layer(s) ({', '.join(dropout[:3])}"
                     f"{', ...' if len(dropout) > 3 else ''}): the reference, every candidate "
                     "and the written models run them off, as eval mode does; a model that "
                     "relies on test-time dropout for varied outputs (pix2pix) needs rewrite "
                     "--keep-dropout")
    shift = input_shift(layers[order[0]], eval_taps.acc[order[0]], plan.train.value)
    expectation = None
    if shift is not None:
        mean, std = image_norm if image_norm is not None else (None, None)
        expectation = probe_preprocessing(model, src, layers[order[0]], mean, std)
        runner.passes += 3
    return Measurements(n, used.size, batch_size, plan.train, noise, cands, reports,
                        runner.passes, tuple(notes), plan.batches, model.precision, truth,
                        metrics, shift, expectation)


def _candidates(runner: Runner, model: Model, ref: OutputStore, population: dict[str, Moments],
                shapes: LayerShapes, batch_size: int, b: int, used: np.ndarray,
                eval_run: Discrepancy, notes: list[str], truth: Truth | None
                ) -> list[tuple[Discrepancy, float | None]]:
    """Each fix, run and measured against the reference (and against ``truth``)."""
    spatial = {name: math.prod(s[1:]) > 1 for name, s in shapes.items()}

    def run(mode: RewriteMode, stats: dict[str, Moments] | None = None
            ) -> tuple[Discrepancy, float | None]:
        return _candidate(runner, model, mode, stats, shapes, ref, batch_size, used, truth)

    out = [run(RewriteMode.RECALIBRATE, population)]
    if any(spatial.values()):
        out.append(run(RewriteMode.INSTANCE_NORM))
    else:
        notes.append("no batch-dependent layer has per-sample spatial statistics: instance-norm "
                     "does not apply")
    if batch_size == b and all(spatial.values()) and truth is None:
        # Identical to the reference by construction: same graph, same batches.
        agreement = None if eval_run.argmax_agreement is None else 1.0
        out.append((Discrepancy("batch-stats", b, 0.0, 0.0, 0.0, agreement), None))
    else:
        out.append(run(RewriteMode.BATCH_STATS))
    return out


def _noise_floor(runner: Runner, ref_model: Model, ref: OutputStore, b: int,
                 used: np.ndarray) -> Discrepancy:
    if b == 1:
        return Discrepancy("noise-floor", 1, 0.0, 0.0, 0.0, None,
                           ("at batch size 1 the reference does not depend on batch composition",))
    # Another seeded shuffle of the same samples: each meets other batch-mates.
    order = np.random.default_rng(SHUFFLE_SEED + 1).permutation(used)
    rebatched = runner.run(ref_model, "noise floor", b, order)
    d = _discrepancy("noise-floor", b, rebatched, ref, used)
    rebatched.close()
    return d


def _candidate(runner: Runner, model: Model, mode: RewriteMode,
               stats: dict[str, Moments] | None, shapes: LayerShapes, ref: OutputStore,
               batch_size: int, used: np.ndarray, truth: Truth | None
               ) -> tuple[Discrepancy, float | None]:
    """One fix, run on the reference's samples in the reference's order."""
    result = model.apply(mode, stats, shapes)
    store = runner.run(result.model, mode.value, batch_size, used)
    d = replace(_discrepancy(mode.value, batch_size, store, ref, used), notes=tuple(result.notes))
    metric = None if truth is None else truth.score(store, used)
    store.close()
    return d, metric


def _discrepancy(name: str, batch_size: int, got: OutputStore, ref: OutputStore,
                 used: np.ndarray) -> Discrepancy:
    """Per-sample ``|got - ref| / |ref|``; see ``NORM_FLOOR`` for the denominator."""
    n = used.size
    errs = np.empty(n)
    agree = 0
    classes = 2 <= ref.width <= MAX_CLASSES
    norms = np.concatenate([np.linalg.norm(ref.read(used[i:i + CHUNK]).astype(np.float64), axis=1)
                            for i in range(0, n, CHUNK)])
    floor = max(NORM_FLOOR * float(np.median(norms)), TINY) if n else TINY
    for start in range(0, n, CHUNK):
        idx = used[start:start + CHUNK]
        y, r = got.read(idx).astype(np.float64), ref.read(idx).astype(np.float64)
        with np.errstate(all="ignore"):
            e = np.linalg.norm(y - r, axis=1) / np.maximum(norms[start:start + idx.size], floor)
        errs[start:start + idx.size] = np.where(np.isfinite(e), e, np.inf)
        if classes:
            agree += int((np.argmax(np.nan_to_num(y, nan=-np.inf), 1) == np.argmax(r, 1)).sum())
    with np.errstate(all="ignore"):
        return Discrepancy(name, batch_size, float(np.mean(errs)), float(np.median(errs)),
                           float(np.quantile(errs, 0.9)), agree / n if classes else None)

