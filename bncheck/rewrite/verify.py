"""Check a written model does what its modes promise, on sample data, before reporting success."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bncheck.backends.base import Model, load_model
from bncheck.core.layers import KEPT_2D, Family
from bncheck.core.options import RewriteMode
from bncheck.rewrite.pipeline import Stage

FIDELITY_TOL = 1e-4
FOLD_TOL = 1e-4
INSTANCE_TOL = 1e-4
STATS_TOL = 1e-5


@dataclass(frozen=True)
class Check:
    """One verification: what was measured against what tolerance."""

    name: str
    measured: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """Within tolerance (NaN never passes)."""
        return bool(self.measured <= self.tolerance)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"name": self.name, "measured": self.measured, "tolerance": self.tolerance,
                "passed": self.passed}


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: scale-free, and any NaN makes it NaN."""
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return float(np.max(np.abs(got.astype(np.float64) - want))) / max(scale, 1e-12)


def verify(path: Path, stages: list[Stage], example: list[np.ndarray], *,
           allow_pickle: bool) -> list[Check]:
    """Reload ``path`` with its own runtime and check every promise of the applied modes."""
    final = stages[-1].after
    written = load_model(path, allow_pickle=allow_pickle)
    checks: list[Check] = []
    runnable = _runnable(written, example)
    if runnable is not None:
        checks.append(Check(f"{path.suffix} file reproduces the rewritten model",
                            rel_error(runnable.run(example), final.run(example)), FIDELITY_TOL))
    modes = [s.mode for s in stages]
    for i, stage in enumerate(stages):
        later = modes[i + 1:]
        if stage.mode is RewriteMode.FOLD:
            checks.append(Check("fold equals the model before it in eval mode",
                                rel_error(stage.after.run(example), stage.before.run(example)),
                                FOLD_TOL))
            left = sum(1 for layer in written.layers() if layer.family is Family.BATCH)
            checks.append(Check("BatchNorm layers left after fold", float(left), 0.0))
        elif stage.mode is RewriteMode.INSTANCE_NORM and runnable is not None and not later:
            checks.append(Check("output of a sample alone equals it inside a batch",
                                _alone_vs_batch(runnable, example), INSTANCE_TOL))
        elif stage.mode is RewriteMode.BATCH_STATS and runnable is not None and not later \
                and not any(KEPT_2D in note for note in stage.notes):
            # The network as trained (torch: its own batch_norm kernel) at the same batch.
            trained = stage.before.apply(RewriteMode.REFERENCE).model
            checks.append(Check("equals the model on batch statistics at the same batch",
                                rel_error(runnable.run(example), trained.run(example)),
                                FIDELITY_TOL))
        elif stage.mode is RewriteMode.RECALIBRATE and RewriteMode.FOLD not in later:
            checks.append(Check("running stats equal the population statistics",
                                _stats_error(written, stage), STATS_TOL))
    return checks


def _runnable(written: Model, example: list[np.ndarray]) -> Model | None:
    from bncheck.errors import BncheckError

    try:
        return written.runnable(example)
    except BncheckError:
        return None  # a bare state_dict: checked by its statistics instead


def _alone_vs_batch(model: Model, example: list[np.ndarray]) -> float:
    together = model.run(example)
    worst = 0.0
    for i in range(min(4, example[0].shape[0])):
        alone = model.run([a[i:i + 1] for a in example])
        worst = max(worst, rel_error(alone[0], together[i]))
    return worst


def _stats_error(written: Model, stage: Stage) -> float:
    assert stage.stats is not None
    torch_convention = stage.before.backend == "torch"
    worst = 0.0
    layers = {layer.name: layer for layer in written.layers()}
    for name, mom in stage.stats.items():
        layer = layers.get(name)
        if layer is None or layer.running_mean is None or layer.running_var is None:
            return float("inf")
        want_var = mom.var_unbiased if torch_convention else mom.var
        assert mom.mean is not None
        worst = max(worst, rel_error(layer.running_mean, mom.mean),
                    rel_error(layer.running_var, want_var))
    return worst
