"""rewrite end to end: passes on sample data, then a staged write that is verified, then commit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bncheck.core.distributed.collective import Alone, Collective
from bncheck.core.inputs.data import SampleSource
from bncheck.core.judgement.metrics import Truth
from bncheck.core.network.model import Model
from bncheck.core.network.options import RewriteMode
from bncheck.core.passes.progress import NoProgress, Progress
from bncheck.core.passes.runner import Loader, Runner, serial_loader
from bncheck.errors import BncheckError
from bncheck.rewriting.atomic import check_destination, staged_output
from bncheck.rewriting.pipeline import Stage, apply_modes
from bncheck.rewriting.verify import Check, verify

# Samples generated to verify a rewrite when no data is given, and their seed.
GENERATED_SAMPLES = 4
SEED = 0


@dataclass(frozen=True)
class RewriteReport:
    """What a write did and measured; ``written`` only when every check passed."""

    source: str
    output: Path
    modes: tuple[RewriteMode, ...]
    notes: dict[str, list[str]]
    checks: tuple[Check, ...]
    verified_on: str
    written: bool

    @property
    def ok(self) -> bool:
        """Every check passed and the file is in place."""
        return self.written and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Prepared:
    """The applied modes and what they are verified on, ready to be written."""

    source: str
    stages: tuple[Stage, ...]
    example: list[np.ndarray]
    src: SampleSource | None
    verified_on: str
    truth: Truth | None
    batch_size: int
    arch: str | None  # rebuilds a written state_dict, so that it can be run and checked
    metric: tuple[float, float] | None  # the task metric before and after, with ``truth``
    collective: Collective  # under torchrun, only rank 0 writes


def prepare(model: Model, modes: list[RewriteMode], *, src: SampleSource | None,
            source_name: str, batch_size: int, train_batch_size: int | None,
            truth: Truth | None, input_shape: tuple[int, ...] | None, arch: str | None,
            progress: Progress | None = None, collective: Collective | None = None,
            loader: Loader = serial_loader) -> Prepared:
    """Apply ``modes`` to the runnable ``model`` on ``src`` (or on generated inputs)."""
    collective = collective or Alone()
    runner = None if src is None else Runner(src, progress or NoProgress(), collective, loader)
    if src is not None:
        example = src.load(np.arange(min(batch_size, len(src))))
        verified_on = f"{example[0].shape[0]} sample(s) from {source_name}"
    else:
        example = _generated(model, input_shape)
        verified_on = f"{GENERATED_SAMPLES} generated inputs of shape {example[0].shape[1:]}"
    runnable = model.runnable(example)
    stages = apply_modes(runnable, modes, runner, example, batch_size, train_batch_size)
    if runnable.notes:
        first = stages[0]
        stages[0] = replace(first, notes=[*runnable.notes, *first.notes])
    metric = None
    if truth is not None and runner is not None:
        metric = (_score(stages[0].before, runner, truth, batch_size),
                  _score(stages[-1].after, runner, truth, batch_size))
    return Prepared(str(model.path), tuple(stages), example, src, verified_on, truth, batch_size,
                    arch, metric, collective)


def write(p: Prepared, out: Path, *, force: bool, keep_dropout: bool,
          force_worse: bool) -> RewriteReport:
    """Write ``out`` atomically and keep it only if verification passes.

    With ``p.truth`` the written model must not do worse than the original on the task metric,
    unless ``force_worse``.
    """
    check_destination(out, [Path(p.source)], force)
    if keep_dropout and not p.stages[-1].after.dropout_layers():
        raise BncheckError(f"--keep-dropout: {p.source} has no Dropout layer to keep")
    written = False
    with staged_output(out) as staged:
        try:
            p.stages[-1].after.save(staged.path, p.example, keep_dropout)
        except OSError as e:  # a read-only folder, a full disk: nothing is left behind
            raise BncheckError(f"-o {out}: cannot write it ({e.strerror or e}); check the "
                               "folder's permissions and free space") from e
        try:
            checks = verify(staged.path, list(p.stages), p.example, arch=p.arch,
                            keep_dropout=keep_dropout)
        except BncheckError as e:
            # The staged file is gone when the user reads this: name the one they asked for.
            raise BncheckError(str(e).replace(str(staged.path), str(out))) from e
        if p.truth is not None and p.metric is not None:
            checks.append(metric_check(*p.metric, p.truth, force_worse))
        if all(c.passed for c in checks):
            staged.commit()
            written = True
    return RewriteReport(p.source, out, tuple(s.mode for s in p.stages),
                         {s.mode.value: s.notes for s in p.stages}, tuple(checks), p.verified_on,
                         written)


def metric_check(before: float, after: float, truth: Truth, force_worse: bool) -> Check:
    """The task metric of the rewritten model may not fall below the original's."""
    loss = (before - after) if truth.higher_is_better else (after - before)
    waived = " (--force-worse: not enforced)" if force_worse else ""
    name = (f"{truth.kind.value} no worse than the original: {truth.fmt(after)} against "
            f"{truth.fmt(before)}, a loss of{waived}")
    # Measured is the loss; a gain counts as no loss.
    return Check(name, max(loss, 0.0) if np.isfinite(loss) else float("inf"),
                 float("inf") if force_worse else 0.0)


def _score(model: Model, runner: Runner, truth: Truth, batch_size: int) -> float:
    n = len(runner.src)
    store = runner.run(model, "metric", batch_size, np.arange(n))
    try:
        return truth.score(store, np.arange(n))
    finally:
        store.close()


def _generated(model: Model, input_shape: tuple[int, ...] | None) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    if input_shape is not None:
        shapes = [input_shape]
    else:
        specs = model.inputs()
        if not specs or any(s.guessed or None in s.shape[1:] for s in specs):
            raise BncheckError(f"{model.path}: the input shape is not fixed in the model; give "
                               "--data (or --input-shape C,H,W) to verify the rewrite")
        shapes = [tuple(int(d) for d in s.shape[1:] if d is not None) for s in specs]
    return [rng.standard_normal((GENERATED_SAMPLES, *s)).astype(np.float32) for s in shapes]
