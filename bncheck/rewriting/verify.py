"""Check a written model does what its modes promise, on sample data, before reporting success."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bncheck.backends.base import load_model
from bncheck.core.judgement.rounding import nudged
from bncheck.core.network.layers import Family, has_per_sample_stats
from bncheck.core.network.model import Model
from bncheck.core.network.numerics import TINY
from bncheck.core.network.options import RewriteMode
from bncheck.rewriting.matrix import CHECKPOINT_SUFFIXES
from bncheck.rewriting.pipeline import Stage

FIDELITY_TOL = 1e-4
FOLD_TOL = 1e-4
INSTANCE_TOL = 1e-4
STATS_TOL = 1e-5
# How many samples the alone-vs-batch check runs alone.
ALONE_SAMPLES = 4
# A rewrite may move float32 results by this many times what one rounding step of the input does.
ROUNDING_MARGIN = 10.0


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


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: scale-free, and any NaN makes it NaN."""
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return float(np.max(np.abs(got.astype(np.float64) - want))) / max(scale, TINY)


def verify(path: Path, stages: list[Stage], example: list[np.ndarray], *,
           arch: str | None = None, keep_dropout: bool = False) -> list[Check]:
    """Reload ``path`` with its own runtime and check every promise of the applied modes.

    With ``keep_dropout`` the file's outputs are random; it is checked with its Dropout switched
    off (the same graph otherwise), and its dropout is checked to be active.
    """
    final = stages[-1].after
    # bncheck wrote this file itself a moment ago: loading its pickle runs no foreign code. A
    # state_dict is rebuilt with the architecture it came with.
    checkpoint = path.suffix.lower() in (*CHECKPOINT_SUFFIXES, ".safetensors")
    written = load_model(path, allow_pickle=True, arch=arch if checkpoint else None)
    checks: list[Check] = []
    if keep_dropout:
        written, active = _dropout_switched_off(written, example)
        checks.append(Check("Dropout active in the written model (two runs of one batch differ; "
                            "1 = identical)", 0.0 if active else 1.0, 0.0))
    runnable = _runnable(written, example)
    # Each model's outputs on the example, computed once: several checks compare the same runs
    # (an instance-norm rewrite ran the written file three times on it, the rewritten model
    # twice).
    outputs: dict[Model, np.ndarray] = {}

    def on_example(model: Model) -> np.ndarray:
        if model not in outputs:
            outputs[model] = model.run(example)
        return outputs[model]

    rounding = _rounding(final, example, on_example(final))
    if runnable is None:
        # Only the statistics of a bare state_dict written without --arch can be checked.
        checks.append(Check(f"{path.suffix} file runs (a state_dict needs --arch to be run and "
                            "checked)", float("inf"), 0.0))

    def tol(base: float) -> float:
        return max(base, rounding)

    if runnable is not None:
        checks.append(Check(f"{path.suffix} file ({runnable.runs_on}) reproduces the rewritten "
                            f"model ({final.runs_on})",
                            rel_error(on_example(runnable), on_example(final)),
                            tol(FIDELITY_TOL)))
    modes = [s.mode for s in stages]
    for i, stage in enumerate(stages):
        later = modes[i + 1:]
        if stage.mode is RewriteMode.FOLD:
            checks.append(Check("fold equals the model before it in eval mode",
                                rel_error(on_example(stage.after), on_example(stage.before)),
                                tol(FOLD_TOL)))
            left = sum(1 for layer in written.layers()
                       if layer.family is Family.BATCH and layer.uses_running_stats)
            checks.append(Check("BatchNorm layers left after fold", float(left), 0.0))
        elif stage.mode is RewriteMode.INSTANCE_NORM and runnable is not None and not later:
            checks.append(Check("output of a sample alone equals it inside a batch",
                                _alone_vs_batch(runnable, example, on_example(runnable)),
                                tol(INSTANCE_TOL)))
            trained = stage.before.apply(RewriteMode.SPATIAL_REFERENCE, shapes=stage.shapes).model
            # The network in train mode one sample at a time: what it was trained as only if it
            # was trained at batch size 1, which is compare's question, not this check's.
            checks.append(Check("equals the network on batch statistics, one sample at a time",
                                rel_error(on_example(runnable), _one_at_a_time(trained, example)),
                                tol(FIDELITY_TOL)))
        elif stage.mode is RewriteMode.BATCH_STATS and runnable is not None and not later:
            # The original network with its own norm layers in train mode, at the same batch: a
            # rewrite that lost part of a layer (an activation after the BN) cannot match it.
            kept = any(not has_per_sample_stats(s) for s in stage.shapes.values())
            trained = stage.before.apply(RewriteMode.SPATIAL_REFERENCE if kept
                                         else RewriteMode.REFERENCE, shapes=stage.shapes).model
            checks.append(Check("equals the network on batch statistics, at the same batch",
                                rel_error(on_example(runnable), on_example(trained)),
                                tol(FIDELITY_TOL)))
        elif stage.mode is RewriteMode.RECALIBRATE and RewriteMode.FOLD not in later:
            checks.append(Check("running stats equal the population statistics",
                                _stats_error(written, stage),
                                max(STATS_TOL, stage.after.float_eps)))
    return checks


def _dropout_switched_off(written: Model, example: list[np.ndarray]) -> tuple[Model, bool]:
    import onnx

    from bncheck.backends.onnxrt.model import OnnxModel

    assert isinstance(written, OnnxModel), "--keep-dropout writes .onnx only (rewrite.matrix)"
    # Loading switched the dropout off; the file as written has it on.
    active = OnnxModel(onnx.load(str(written.path)), written.path)
    first, second = active.run(example), active.run(example)
    return written, bool(np.any(first != second))


def _runnable(written: Model, example: list[np.ndarray]) -> Model | None:
    from bncheck.errors import BncheckError

    try:
        return written.runnable(example)
    except BncheckError:
        return None  # a bare state_dict: checked by its statistics instead


def _rounding(model: Model, example: list[np.ndarray], plain: np.ndarray) -> float:
    """How far float32 rounding alone moves this model's outputs, times a safety margin.

    Two runs of the same model on inputs that differ by one float32 rounding step (relative
    2**-24, seeded) differ only by how the network amplifies rounding. A network that normalizes
    tiny maps per sample amplifies it a thousandfold, and then a correct rewrite, computed in
    another order, differs by as much; in float64 the same comparisons agree exactly. A real
    defect (a dropped activation, say) moves outputs by far more. ``plain`` is the model's
    output on ``example`` itself.
    """
    spread = ROUNDING_MARGIN * rel_error(model.run(nudged(example, model.float_eps)), plain)
    return spread if math.isfinite(spread) else 0.0


def _alone_vs_batch(model: Model, example: list[np.ndarray], together: np.ndarray) -> float:
    worst = 0.0
    for i in range(min(ALONE_SAMPLES, example[0].shape[0])):
        alone = model.run([a[i:i + 1] for a in example])
        worst = max(worst, rel_error(alone[0], together[i]))
    return worst


def _one_at_a_time(model: Model, example: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([model.run([a[i:i + 1] for a in example])
                           for i in range(example[0].shape[0])])


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
