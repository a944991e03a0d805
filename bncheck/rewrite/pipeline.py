"""Apply rewrite modes in order to a backend model; recalibrate gets its statistics here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bncheck.backends.base import Model
from bncheck.core.compare import needs_stats
from bncheck.core.data import SampleSource, batches
from bncheck.core.moments import Moments
from bncheck.core.options import RewriteMode
from bncheck.core.progress import NoProgress, Progress
from bncheck.core.taps import TapCollector


@dataclass
class Stage:
    """One applied mode: the model before and after, and what the pass said."""

    mode: RewriteMode
    before: Model
    after: Model
    notes: list[str]
    stats: dict[str, Moments] | None = None


def population_stats(model: Model, src: SampleSource, batch_size: int,
                     progress: Progress | None = None) -> dict[str, Moments]:
    """Exact float64 population moments of each BN layer's input, PreciseBN-style.

    Normalization layers run on batch statistics (running stats untouched, dropout in eval);
    moments are merged over all samples, weighted by element count.
    """
    progress = progress or NoProgress()
    names = [layer.name for layer in model.layers() if needs_stats(layer)]
    ref = model.apply(RewriteMode.REFERENCE).model
    taps = TapCollector()
    progress.start("recalibrate", len(src))
    for idx, arrays in batches(src, batch_size):
        ref.run(arrays, names, taps)
        progress.advance(idx.size)
    progress.finish()
    return {name: acc.population for name, acc in taps.acc.items()}


def apply_modes(model: Model, modes: Sequence[RewriteMode], src: SampleSource | None,
                example: list[np.ndarray], batch_size: int,
                progress: Progress | None = None) -> list[Stage]:
    """Run each mode on the result of the previous one."""
    stages: list[Stage] = []
    current = model
    for mode in modes:
        # A tapped run teaches the backend each layer's input rank (needed for (N, C) layers).
        current.run(example, [layer.name for layer in current.layers() if needs_stats(layer)])
        stats = None
        if mode is RewriteMode.RECALIBRATE:
            assert src is not None
            stats = population_stats(current, src, batch_size, progress)
        result = current.apply(mode, stats)
        stages.append(Stage(mode, current, result.model, result.notes, stats))
        current = result.model
    return stages
