"""rewrite end to end: data, passes, staged write, verification, commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bncheck.backends.base import Model
from bncheck.core.data import ImageOptions, SampleSource, batches, open_for_model
from bncheck.core.metrics import Truth
from bncheck.core.options import RewriteMode
from bncheck.core.outputs import OutputStore
from bncheck.core.progress import Progress
from bncheck.errors import BncheckError
from bncheck.rewrite.atomic import staged_output
from bncheck.rewrite.pipeline import apply_modes
from bncheck.rewrite.verify import Check, verify

GENERATED_SAMPLES = 4
SEED = 0


@dataclass
class RewriteReport:
    """What rewrite did and measured."""

    source: Path
    output: Path
    modes: list[RewriteMode]
    notes: dict[str, list[str]]
    checks: list[Check]
    verified_on: str
    written: bool = False

    @property
    def ok(self) -> bool:
        """Every check passed and the file is in place."""
        return self.written and all(c.passed for c in self.checks)


def run_rewrite(model: Model, modes: list[RewriteMode], out: Path, *, data: Path | None,
                image: ImageOptions, limit: int | None, batch_size: int,
                train_batch_size: int | None, truth: Callable[[int], Truth | None],
                force_worse: bool, keep_dropout: bool, input_shape: tuple[int, ...] | None,
                allow_pickle: bool,
                progress: Progress | None = None) -> RewriteReport:
    """Apply ``modes``, write ``out`` atomically, and keep it only if verification passes.

    ``truth`` gives the labels or targets for a sample count, or None; with them the written
    model must not do worse than the original unless ``force_worse``.
    """
    src: SampleSource | None = None
    metric_truth: Truth | None = None
    if data is not None:
        src, runnable = open_for_model(model, data, image, limit, input_shape)
        metric_truth = truth(len(src))
        example = src.load(np.arange(min(batch_size, len(src))))
        verified_on = f"{example[0].shape[0]} sample(s) from {data}"
    else:
        example = _generated(model, input_shape)
        runnable = model.runnable(example)
        verified_on = f"{GENERATED_SAMPLES} generated inputs of shape {example[0].shape[1:]}"
    stages = apply_modes(runnable, modes, src, example, batch_size, train_batch_size, progress)
    report = RewriteReport(model.path, out, modes, {s.mode.value: s.notes for s in stages}, [],
                           verified_on)
    if keep_dropout and not stages[-1].after.dropout_layers():
        raise BncheckError(f"--keep-dropout: {model.path} has no Dropout layer to keep")
    with staged_output(out) as staged:
        stages[-1].after.save(staged.path, example, keep_dropout)
        report.checks = verify(staged.path, stages, example, allow_pickle=allow_pickle,
                               keep_dropout=keep_dropout)
        if metric_truth is not None and src is not None:
            report.checks.append(metric_check(stages[0].before, stages[-1].after, src,
                                              metric_truth, batch_size, force_worse))
        if all(c.passed for c in report.checks):
            staged.commit()
            report.written = True
    return report


def metric_check(original: Model, rewritten: Model, src: SampleSource, truth: Truth,
                 batch_size: int, force_worse: bool) -> Check:
    """The task metric of the rewritten model may not fall below the original's."""
    before, after = _score(original, src, truth, batch_size), _score(rewritten, src, truth,
                                                                     batch_size)
    loss = (before - after) if truth.higher_is_better else (after - before)
    waived = " (--force-worse: not enforced)" if force_worse else ""
    name = (f"{truth.kind.value} no worse than the original: {truth.fmt(after)} against "
            f"{truth.fmt(before)}{waived}")
    return Check(name, loss if np.isfinite(loss) else float("inf"),
                 float("inf") if force_worse else 0.0)


def _score(model: Model, src: SampleSource, truth: Truth, batch_size: int) -> float:
    store = OutputStore(len(src))
    try:
        for idx, arrays in batches(src, batch_size):
            store.write(idx, model.run(arrays))
        return truth.score(store, np.arange(len(src)))
    finally:
        store.close()


def _generated(model: Model, input_shape: tuple[int, ...] | None) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    if input_shape is not None:
        shapes = [input_shape]
    else:
        specs = model.inputs()
        if not specs or any(d is None for s in specs for d in s.shape[1:]):
            raise BncheckError(f"{model.path}: the input shape is not fixed in the model; give "
                               "--data (or --input-shape C,H,W) to verify the rewrite")
        shapes = [tuple(int(d) for d in s.shape[1:] if d is not None) for s in specs]
    return [rng.standard_normal((GENERATED_SAMPLES, *s)).astype(np.float32) for s in shapes]
