"""compare: run the model as trained (the reference) and each candidate fix on the same samples.

The reference is the network as it was trained: normalization layers on batch statistics at the
training batch size, running stats untouched, everything else in eval mode.
Re-batching the reference gives the noise floor; a candidate within tolerance of the reference
behaves as trained. See docs/design.md.
"""

from __future__ import annotations

import math

import numpy as np

from bncheck.core.distributed.collective import Collective
from bncheck.core.inputs.data import SampleSource
from bncheck.core.judgement.convergence import Converged
from bncheck.core.judgement.diagnosis import KL_ERROR, KL_WARN, divergence, wrong_stats
from bncheck.core.judgement.discrepancy import Discrepancy, Distance
from bncheck.core.judgement.measurements import LayerReport, Measurements
from bncheck.core.judgement.metrics import Truth
from bncheck.core.judgement.noise import noise_floor
from bncheck.core.judgement.rounding import half_rounding, is_half
from bncheck.core.judgement.shift import input_shift, probe_preprocessing
from bncheck.core.judgement.tolerance import MAX_TOLERANCE, departs_beyond_noise, tolerance_for
from bncheck.core.network.model import LayerShapes, Model
from bncheck.core.network.moments import Moments
from bncheck.core.network.options import RewriteMode
from bncheck.core.passes.progress import NoProgress, Progress
from bncheck.core.passes.recalibration import gather
from bncheck.core.passes.reference import (
    SHUFFLE_SEED,
    given_batch,
    plan_reference,
    training_batch,
)
from bncheck.core.passes.runner import Loader, Runner, serial_loader
from bncheck.core.stats.batchsize import LAYERS_TRIED, BatchSizeEstimate, BatchSizeSource
from bncheck.core.stats.taps import TapCollector


def compare(model: Model, src: SampleSource, *, batch_size: int, train_batch_size: int | None,
            truth: Truth | None = None,
            image_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
            progress: Progress | None = None, collective: Collective | None = None,
            loader: Loader = serial_loader, converge: bool = True) -> Measurements:
    """Measure eval mode and every candidate against the reference on ``src``.

    ``truth`` adds the task metric of each run; ``image_norm`` is the (mean, std) an image folder
    was normalized with, so a preprocessing fix can be given as --mean/--std. With ``converge``
    the taps of the eval and reference passes may end once their statistics have converged
    (``core/judgement/convergence.py``); ``converge=False`` taps every sample.
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
    # Sample rows of the first layers: the batch-size estimate and the input-shift test.
    eval_taps = TapCollector(rows=LAYERS_TRIED)
    # Eval mode treats each sample alone, so its pass may take the reference's shuffled order:
    # the samples tapped before its taps end are then a random subset of the data.
    shuffled = np.random.default_rng(SHUFFLE_SEED).permutation(n)

    def estimate(taps: TapCollector, tapped: int) -> BatchSizeEstimate:
        return given_batch(train_batch_size) if train_batch_size is not None \
            else training_batch(taps, layers, tapped, taps.shapes)

    def eval_judge(taps: TapCollector, tapped: int) -> tuple[object, int]:
        train = estimate(taps, tapped)
        first = taps.order[0]
        shift = input_shift(layers[first], taps.acc[first], train.value)
        return ((train.value, train.source, train.low, train.high, shift is None),
                plan_reference(train, n, model.max_batch).batch)

    eval_rule = Converged(layers, batch_size, eval_judge) if converge else None
    eval_store = runner.run(model, "eval", batch_size, shuffled, taps=list(layers),
                            on_tap=eval_taps, tap_rule=eval_rule)
    order = eval_taps.order
    spatial = {name: eval_taps.acc[name].spatial > 1 for name in order}
    shapes = eval_taps.shapes
    eval_tapped = _tapped(eval_rule, batch_size, n)
    train = estimate(eval_taps, eval_tapped)
    plan = plan_reference(train, n, model.max_batch)
    b, used = plan.batch, plan.used
    notes = [*model.notes, *plan.notes]

    def ref_judge(taps: TapCollector, _tapped: int) -> tuple[object, int]:
        # Each layer's finding severity (the stats-divergence levels of the verdict).
        kls = [divergence(layers[k], taps.acc[k], b).kl for k in taps.order if k in layers]
        return tuple((kl >= KL_WARN, kl >= KL_ERROR) for kl in kls), b

    ref_model = model.apply(RewriteMode.REFERENCE, shapes=shapes).model
    ref_taps = TapCollector()
    ref_rule = Converged(layers, b, ref_judge) if converge else None
    ref = runner.run(ref_model, "reference", b, used, taps=list(layers), on_tap=ref_taps,
                     tap_rule=ref_rule)
    ref_tapped = _tapped(ref_rule, b, used.size)
    dist = Distance(ref, used)
    cands: dict[str, Discrepancy] = {"eval": dist.discrepancy("eval", batch_size, eval_store)}
    metrics = {} if truth is None else {"eval": truth.score(eval_store, used)}
    eval_store.close()
    noise, settled = noise_floor(runner, ref_model, dist, b, cands["eval"].mean, notes)
    if not settled and (eval_tapped < n or ref_tapped < used.size):
        # A mismatch, a close call or a noisy reference keeps every tap, as the noise floor
        # keeps its whole pass: the rest of each pass runs again, tapped, outputs not kept.
        if eval_tapped < n:
            runner.run(model, "eval (taps)", batch_size, shuffled[eval_tapped:],
                       taps=list(layers), on_tap=eval_taps, keep_outputs=False).close()
            if estimate(eval_taps, n) != train:
                ref.close()
                return compare(model, src, batch_size=batch_size,
                               train_batch_size=train_batch_size, truth=truth,
                               image_norm=image_norm, progress=progress,
                               collective=collective, loader=loader, converge=False)
            eval_tapped = n
        if ref_tapped < used.size:
            runner.run(ref_model, "reference (taps)", b, used[ref_tapped:], taps=list(layers),
                       on_tap=ref_taps, keep_outputs=False).close()
            ref_tapped = used.size
    if eval_tapped < n or ref_tapped < used.size:
        notes.append(f"layer statistics converged on {eval_tapped} of {n} samples in eval mode "
                     f"and {ref_tapped} of {used.size} in the reference; the rest ran untapped "
                     "(docs/design.md, \"Cost\")")
    rounding = half_rounding(ref_model, src.load(used[:b])) if is_half(model) else None
    tol = tolerance_for(noise.mean)
    reports = tuple(
        LayerReport(layers[name], i, spatial[name],
                    divergence(layers[name], eval_taps.acc[name], b),
                    divergence(layers[name], ref_taps.acc[name], b))
        for i, name in enumerate(order)
    )
    noisy = tol > MAX_TOLERANCE
    # A reference too noisy to judge the output by still lets layers whose running stats are
    # wrong be fixed (docs/design.md, "The verdict").
    wrong = noisy and bool(wrong_stats(r.reference.kl for r in reports))
    if noisy and not departs_beyond_noise(cands["eval"].mean, tol) and not wrong:
        notes.append("the reference moves too much with batch composition to judge against: "
                     "the candidate fixes were not run")
    elif cands["eval"].mean <= tol and not wrong:
        # Eval mode already behaves as trained: no fix to choose, so no candidate runs.
        notes.append("eval mode is within tolerance: the candidate fixes were not run")
    else:
        # rewrite's recalibrate gathers over the same shuffles: the reference's own is tapped.
        population, count = gather(runner, ref_model, plan, list(layers), first=ref_taps)
        if count > 1:
            notes.append(f"recalibrate's statistics average {count} shuffles of the samples "
                         f"({count * plan.batches} batches), as rewrite's do")
        for d, metric in _candidates(runner, model, dist, population, shapes, batch_size, b,
                                     cands["eval"], notes, truth):
            cands[d.name] = d
            if metric is not None:
                metrics[d.name] = metric
    ref.close()
    dropout = model.dropout_layers()
    if dropout:
        notes.append(f"the model has {len(dropout)} Dropout layer(s) ({', '.join(dropout[:3])}"
                     f"{', ...' if len(dropout) > 3 else ''}): the reference, every candidate "
                     "and the written models run them off, as eval mode does; a model that "
                     "relies on test-time dropout for varied outputs (pix2pix) needs "
                     + ("its Dropout layers called with training=True" if model.backend == "keras"
                        else "rewrite --keep-dropout"))
    shift = input_shift(layers[order[0]], eval_taps.acc[order[0]], plan.train.value)
    expectation = None
    if shift is not None:
        mean, std = image_norm if image_norm is not None else (None, None)
        expectation = probe_preprocessing(model, src, layers[order[0]], mean, std)
        runner.passes += 3
    return Measurements(n, used.size, batch_size, plan.train, noise, cands, reports,
                        runner.passes, tuple(notes), plan.batches, model.precision, truth,
                        metrics, shift, expectation, rounding,
                        {"eval": eval_tapped, "reference": ref_tapped})


def _tapped(rule: Converged | None, batch_size: int, total: int) -> int:
    """Samples a pass tapped: all, or those before its rule ended the taps."""
    if rule is None or rule.stopped_at is None:
        return total
    return min(total, rule.stopped_at * batch_size)


def _candidates(runner: Runner, model: Model, dist: Distance, population: dict[str, Moments],
                shapes: LayerShapes, batch_size: int, b: int, eval_run: Discrepancy,
                notes: list[str], truth: Truth | None
                ) -> list[tuple[Discrepancy, float | None]]:
    """Each fix, run and measured against the reference (and against ``truth``)."""
    spatial = {name: math.prod(s[1:]) > 1 for name, s in shapes.items()}

    def run(mode: RewriteMode, stats: dict[str, Moments] | None = None
            ) -> tuple[Discrepancy, float | None]:
        return _candidate(runner, model, mode, stats, shapes, dist, batch_size, truth)

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


def _candidate(runner: Runner, model: Model, mode: RewriteMode,
               stats: dict[str, Moments] | None, shapes: LayerShapes, dist: Distance,
               batch_size: int, truth: Truth | None
               ) -> tuple[Discrepancy, float | None]:
    """One fix, run on the reference's samples in the reference's order."""
    result = model.apply(mode, stats, shapes)
    store = runner.run(result.model, mode.value, batch_size, dist.used)
    d = dist.discrepancy(mode.value, batch_size, store, notes=tuple(result.notes))
    metric = None if truth is None else truth.score(store, dist.used)
    store.close()
    return d, metric
