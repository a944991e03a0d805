"""Apply rewrite modes in order to a backend model; recalibrate gets its statistics here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bncheck.core.network.model import LayerShapes, Model
from bncheck.core.network.moments import Moments
from bncheck.core.network.options import RewriteMode
from bncheck.core.passes.recalibration import gather
from bncheck.core.passes.reference import (
    SHUFFLE_SEED,
    given_batch,
    plan_reference,
    training_batch,
)
from bncheck.core.passes.runner import Runner
from bncheck.core.stats.batchsize import LAYERS_TRIED
from bncheck.core.stats.taps import TapCollector


@dataclass(frozen=True)
class Stage:
    """One applied mode: the model before and after, what the pass said, and the per-sample
    input shape of each layer of ``before`` (so checks can rebuild the network as trained)."""

    mode: RewriteMode
    before: Model
    after: Model
    notes: list[str]
    shapes: LayerShapes
    stats: dict[str, Moments] | None = None


def population_stats(model: Model, runner: Runner, batch_size: int,
                     train_batch_size: int | None, shapes: LayerShapes
                     ) -> tuple[dict[str, Moments], list[str]]:
    """Exact float64 population moments of each BN layer's input, PreciseBN-style, and notes.

    They are gathered exactly as compare's recalibrate candidate gathers them: normalization
    layers on batch statistics at the training batch size (running stats untouched, dropout in
    eval), over the same shuffled reference batches and, for a set of few batches, the same
    further shuffles (``core/passes/recalibration.py``), merged in float64 weighted by element
    count. Without ``train_batch_size``, an eval pass estimates it first, through the layers
    the estimate reads and no further; ``batch_size`` only sets how that batch-independent pass
    is chunked, so it cannot change the result.
    ``shapes`` are the layers' per-sample input shapes (``layer_shapes``).
    """
    layers = {layer.name: layer for layer in model.layers() if layer.needs_stats}
    n = len(runner.src)
    if train_batch_size is not None:
        # The eval pass would only estimate what the user gave: one pass less.
        train = given_batch(train_batch_size)
    else:
        # compare's order, so the sample rows the estimate reads are the same samples.
        eval_taps = TapCollector(rows=LAYERS_TRIED)
        order = np.random.default_rng(SHUFFLE_SEED).permutation(n)
        runner.run(model, "eval", batch_size, order, taps=list(layers),
                   on_tap=eval_taps, keep_outputs=False, stop_after=LAYERS_TRIED).close()
        train = training_batch(eval_taps, layers, n, shapes)
    plan = plan_reference(train, n, model.max_batch)
    ref_model = model.apply(RewriteMode.REFERENCE, shapes=shapes).model
    population, count = gather(runner, ref_model, plan, list(layers))
    over = (f"{plan.used.size} shuffled samples (" if count == 1 else
            f"{count} shuffles of {plan.used.size} samples ({count * plan.batches} batches; ")
    notes = [f"statistics gathered on batch statistics at batch size {plan.batch} over {over}"
             f"training batch size {plan.train.value}, {plan.train.source.value}: "
             f"{plan.train.detail})", *plan.notes]
    return population, notes


def layer_shapes(model: Model, example: list[np.ndarray]) -> LayerShapes:
    """Per-sample input shape of each batch-dependent layer, from one tapped run on the first
    two samples of ``example`` (all of it for a graph that fixes its batch size).

    A layer's input shape decides how it is rewritten: (N, C) and 1x1 maps have no per-sample
    statistics. Eval mode treats each sample alone, so two samples show every shape (two, not
    one: a forward that squeezes its batch axis away fails at one). On the bench's ResNet-18
    layout a batch of 32 took 0.13 s of a 3.4 s `rewrite --mode recalibrate`, two samples 0.014 s.
    """
    probe = TapCollector()
    sample = example if model.max_batch is not None else [a[:2] for a in example]
    model.run(sample, [layer.name for layer in model.layers() if layer.needs_stats], probe)
    return probe.shapes


def apply_modes(model: Model, modes: Sequence[RewriteMode], runner: Runner | None,
                example: list[np.ndarray], batch_size: int,
                train_batch_size: int | None) -> list[Stage]:
    """Run each mode on the result of the previous one."""
    stages: list[Stage] = []
    current = model
    for mode in modes:
        shapes = layer_shapes(current, example)
        stats = None
        notes: list[str] = []
        if mode is RewriteMode.RECALIBRATE:
            assert runner is not None
            stats, notes = population_stats(current, runner, batch_size, train_batch_size,
                                            shapes)
        result = current.apply(mode, stats, shapes)
        stages.append(Stage(mode, current, result.model, notes + result.notes, shapes, stats))
        current = result.model
    return stages
