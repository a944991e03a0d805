"""Apply rewrite modes in order to a backend model; recalibrate gets its statistics here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bncheck.core.model import LayerShapes, Model
from bncheck.core.moments import Moments
from bncheck.core.options import RewriteMode
from bncheck.core.reference import plan_reference
from bncheck.core.runner import Runner
from bncheck.core.taps import TapCollector


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
                     train_batch_size: int | None) -> tuple[dict[str, Moments], list[str]]:
    """Exact float64 population moments of each BN layer's input, PreciseBN-style, and notes.

    They are gathered exactly as compare's recalibrate candidate gathers them: normalization
    layers on batch statistics at the training batch size (running stats untouched, dropout in
    eval), over the same shuffled reference batches, merged in float64 weighted by element
    count. ``batch_size`` only sets how the batch-independent eval pass (which estimates the
    training batch size) is chunked, so it cannot change the result.
    """
    layers = {layer.name: layer for layer in model.layers() if layer.needs_stats}
    n = len(runner.src)
    eval_taps = TapCollector()
    runner.run(model, "eval", batch_size, np.arange(n), taps=list(layers), on_tap=eval_taps,
               keep_outputs=False).close()
    plan = plan_reference(eval_taps, layers, n, train_batch_size, model.max_batch)
    taps = TapCollector()
    runner.run(model.apply(RewriteMode.REFERENCE, shapes=eval_taps.shapes).model, "recalibrate",
               plan.batch, plan.used, taps=list(layers), on_tap=taps, keep_outputs=False).close()
    notes = [f"statistics gathered on batch statistics at batch size {plan.batch} over "
             f"{plan.used.size} shuffled samples (training batch size {plan.train.value}, "
             f"{plan.train.source.value}: {plan.train.detail})", *plan.notes]
    return {name: acc.population for name, acc in taps.acc.items()}, notes


def apply_modes(model: Model, modes: Sequence[RewriteMode], runner: Runner | None,
                example: list[np.ndarray], batch_size: int,
                train_batch_size: int | None) -> list[Stage]:
    """Run each mode on the result of the previous one."""
    stages: list[Stage] = []
    current = model
    for mode in modes:
        # Each layer's input shape decides how it is rewritten ((N, C) and 1x1 maps have no
        # per-sample statistics), so one tapped run on the example measures them.
        probe = TapCollector()
        current.run(example, [layer.name for layer in current.layers() if layer.needs_stats],
                    probe)
        stats = None
        notes: list[str] = []
        if mode is RewriteMode.RECALIBRATE:
            assert runner is not None
            stats, notes = population_stats(current, runner, batch_size, train_batch_size)
        result = current.apply(mode, stats, probe.shapes)
        stages.append(Stage(mode, current, result.model, notes + result.notes, probe.shapes,
                            stats))
        current = result.model
    return stages
