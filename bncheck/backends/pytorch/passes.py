"""Rewrite passes over a torch module. Each works on a deep copy and returns it with notes."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _NormBase

from bncheck.backends.pytorch.exported import attr_tensor
from bncheck.backends.pytorch.layers import family_of, is_frozen_bn
from bncheck.backends.pytorch.modules import ScaleShift, StatNorm
from bncheck.backends.pytorch.swap import Replacements
from bncheck.core.network.fold_math import FoldTarget, bn_scale_shift, fold_weights
from bncheck.core.network.layers import KEPT_2D, Family
from bncheck.core.network.model import PopulationStats
from bncheck.core.network.naming import unique_name
from bncheck.core.network.numerics import DEFAULT_EPS
from bncheck.core.network.options import RewriteMode

_FOLD_MODULES: dict[type[nn.Module], FoldTarget] = {
    nn.Conv1d: FoldTarget.CONV, nn.Conv2d: FoldTarget.CONV, nn.Conv3d: FoldTarget.CONV,
    nn.ConvTranspose1d: FoldTarget.CONV_TRANSPOSE, nn.ConvTranspose2d: FoldTarget.CONV_TRANSPOSE,
    nn.ConvTranspose3d: FoldTarget.CONV_TRANSPOSE, nn.Linear: FoldTarget.LINEAR,
}
_FOLD_FUNCTIONS = {
    torch.ops.aten.conv1d.default: (FoldTarget.CONV, 6),
    torch.ops.aten.conv2d.default: (FoldTarget.CONV, 6),
    torch.ops.aten.conv3d.default: (FoldTarget.CONV, 6),
    torch.ops.aten.linear.default: (FoldTarget.LINEAR, None),
    torch.ops.aten.conv_transpose1d.default: (FoldTarget.CONV_TRANSPOSE, 6),
    torch.ops.aten.conv_transpose2d.input: (FoldTarget.CONV_TRANSPOSE, 6),
    torch.ops.aten.conv_transpose3d.input: (FoldTarget.CONV_TRANSPOSE, 6),
}


def stat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers whose eval behaviour uses stored statistics that training did not."""
    out = []
    for name, m in model.named_modules():
        family = family_of(m)
        if family not in (Family.BATCH, Family.INSTANCE) or is_frozen_bn(m):
            continue
        if getattr(m, "running_mean", None) is None:
            continue  # track_running_stats=False: already batch statistics at inference
        out.append((name, m))
    return out


def apply_pass(model: nn.Module, mode: RewriteMode, stats: PopulationStats | None,
               spatial: Mapping[str, int]) -> tuple[nn.Module, list[str]]:
    """Apply ``mode`` to a deep copy of ``model``.

    ``spatial`` maps a layer to the number of values per channel in one sample of its input, as
    seen so far (1 for (N, C) inputs and 1x1 maps).
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise AssertionError("TorchScript is rewritten through its ONNX form")
    new = copy.deepcopy(model).eval()
    if mode is RewriteMode.RECALIBRATE:
        return new, _recalibrate(new, stats)
    if mode is RewriteMode.FOLD:
        return _fold(new)
    if mode in (RewriteMode.REFERENCE, RewriteMode.SPATIAL_REFERENCE):
        keep = mode is RewriteMode.SPATIAL_REFERENCE
        return _on_batch_stats(new, spatial if keep else None), []
    notes = []
    swaps = Replacements(new)
    for name, m in stat_layers(new):
        per_sample = mode is RewriteMode.INSTANCE_NORM or family_of(m) is Family.INSTANCE
        if spatial.get(name) == 1:
            notes.append(f"{name}: {KEPT_2D}")
        swaps.replace(name, _stat_norm(m, per_sample, keep_no_spatial=True))
    return new, notes + swaps.notes()


def _on_batch_stats(model: nn.Module, spatial: Mapping[str, int] | None) -> nn.Module:
    """The network as trained: its own norm layers in train mode, running stats left untouched.

    No module is replaced, so whatever a layer's class does around its normalization (timm's
    BatchNormAct2d applies an activation) is exactly as in training; rewrites are checked
    against this. With ``spatial``, layers without per-sample statistics stay in eval mode.
    """
    for name, m in stat_layers(model):
        if spatial is not None and spatial.get(name) == 1:
            continue
        m.train()
        if isinstance(m, _NormBase):
            # In train mode torch's norm layers then pass no running stats to the kernel: batch
            # statistics, and no update of the buffers.
            m.track_running_stats = False
    return model


def tensor(m: nn.Module, name: str) -> torch.Tensor | None:
    """A tensor attribute of ``m`` (parameter or buffer), typed for the checker."""
    t = getattr(m, name, None)
    return t if isinstance(t, torch.Tensor) else None


def _required(m: nn.Module, name: str) -> torch.Tensor:
    t = tensor(m, name)
    assert t is not None, f"{type(m).__name__} has no tensor {name}"
    return t


def _eps(m: nn.Module) -> float:
    return float(getattr(m, "eps", DEFAULT_EPS))


def _stat_norm(m: nn.Module, per_sample: bool, keep_no_spatial: bool) -> StatNorm:
    rm, rv = _required(m, "running_mean"), _required(m, "running_var")
    w, b = tensor(m, "weight"), tensor(m, "bias")
    return StatNorm(torch.ones_like(rm) if w is None else w, torch.zeros_like(rm) if b is None else b,
                    rm, rv, _eps(m), per_sample, keep_no_spatial)


def _recalibrate(model: nn.Module, stats: PopulationStats | None) -> list[str]:
    notes = []
    for name, m in stat_layers(model):
        if stats is None or name not in stats:
            notes.append(f"{name}: no sample statistics reached this layer; kept its running stats")
            continue
        # torch stores the unbiased variance in running_var; a layer that says otherwise (a
        # Keras BatchNormalization) the biased one.
        unbiased = bool(getattr(m, "unbiased_running_var", True))
        mean = stats[name].mean
        var = stats[name].var_unbiased if unbiased else stats[name].var
        assert mean is not None
        rm, rv = _required(m, "running_mean"), _required(m, "running_var")
        old = rm.detach().double().cpu().numpy()
        with torch.no_grad():
            rm.copy_(torch.from_numpy(mean))
            rv.copy_(torch.from_numpy(var))
        notes.append(f"{name}: running stats re-estimated (max |mean shift| "
                     f"{float(np.abs(mean - old).max()):.3g})")
    return notes


def scale_shift_of(name: str, m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """An eval-mode BN module as ``x * scale + shift`` per channel (float64)."""
    channels = _required(m, "running_mean").numel()

    def arr(t: torch.Tensor | None, fill: float) -> np.ndarray:
        if t is None:
            return np.full(channels, fill)
        return t.detach().double().cpu().numpy().reshape(-1)

    gamma, beta = arr(tensor(m, "weight"), 1.0), arr(tensor(m, "bias"), 0.0)
    mean, var = arr(tensor(m, "running_mean"), 0.0), arr(tensor(m, "running_var"), 1.0)
    return bn_scale_shift(name, gamma, beta, mean, var, _eps(m))


def _has_bn_stats(m: nn.Module) -> bool:
    return family_of(m) is Family.BATCH and tensor(m, "running_mean") is not None


class _ScaleShiftLeaf(fx.Tracer):
    """Keeps each folded layer's ScaleShift as one call_module node that fold can find."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, ScaleShift) or super().is_leaf_module(m, module_qualified_name)


def _fold(model: nn.Module) -> tuple[nn.Module, list[str]]:
    bns = [(n, m) for n, m in model.named_modules() if _has_bn_stats(m)]
    if not bns:
        return model, []
    # First every BN becomes its per-channel scale and shift, inside whatever its class adds
    # (an activation after it, say); then each shift that follows a conv is folded into it.
    swaps = Replacements(model)
    folds: dict[int, tuple[str, np.ndarray, np.ndarray]] = {}  # by ScaleShift identity
    for name, m in bns:
        scale, shift = scale_shift_of(name, m)
        ss = _scale_shift(scale, shift, _required(m, "running_mean"))
        folds[id(ss)] = (name, scale, shift)
        swaps.replace(name, ss)
    notes = swaps.notes()
    try:
        if isinstance(model, fx.GraphModule):
            gm = model
        else:
            tracer = _ScaleShiftLeaf()
            gm = fx.GraphModule(model, tracer.trace(model))
    except Exception as e:  # tracing fails on data-dependent control flow
        notes.append(f"model is not traceable ({type(e).__name__}); every BatchNorm became a "
                     "per-channel scale and shift")
        return model, notes
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        key = id(gm.get_submodule(node.target))
        if key not in folds:
            continue
        name, scale, shift = folds[key]
        prev = node.args[0]
        if isinstance(prev, fx.Node) and _only_value_user(prev, node) and \
                _fold_into(gm, prev, scale, shift):
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
            gm.set_submodule(node.target, nn.Identity())
            into = prev.target if prev.op == "call_module" else prev.name
            notes.append(f"{name}: folded into {into}")
        else:
            notes.append(f"{name}: follows no foldable op; became a per-channel scale and shift")
    gm.graph.lint()
    gm.recompile()
    return gm, notes


def _only_value_user(prev: fx.Node, node: fx.Node) -> bool:
    """Whether ``node`` is the only op that reads ``prev``'s values: folding changes them.

    Reads of metadata (``x.ndim``, ``x.shape``, ``x.size()``, as in timm's input asserts) do not
    change with folding.
    """
    def metadata(user: fx.Node) -> bool:
        return ((user.op == "call_function" and user.target is getattr)
                or (user.op == "call_method" and user.target in ("size", "dim")))

    return all(user is node or metadata(user) for user in prev.users)


def _scale_shift(scale: np.ndarray, shift: np.ndarray, like: torch.Tensor) -> ScaleShift:
    return ScaleShift(torch.from_numpy(scale).to(like.dtype), torch.from_numpy(shift).to(like.dtype))


def _fold_into(gm: fx.GraphModule, prev: fx.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    if prev.op == "call_module":
        mod = gm.get_submodule(str(prev.target))
        target = _FOLD_MODULES.get(type(mod))
        if target is None:
            return False
        weight, bias = _required(mod, "weight"), tensor(mod, "bias")
        w, b = fold_weights(target, _np(weight), None if bias is None else _np(bias),
                            scale, shift, int(getattr(mod, "groups", 1)))
        mod.weight = nn.Parameter(torch.from_numpy(w).to(weight.dtype))
        mod.bias = nn.Parameter(torch.from_numpy(b).to(weight.dtype))
        return True
    if prev.op == "call_function" and prev.target in _FOLD_FUNCTIONS:
        return _fold_into_function(gm, prev, scale, shift)
    return False


def _fold_into_function(gm: fx.GraphModule, prev: fx.Node, scale: np.ndarray,
                        shift: np.ndarray) -> bool:
    # torch.export graphs call aten ops with weights read by get_attr nodes.
    target, groups_at = _FOLD_FUNCTIONS[prev.target]  # type: ignore[index]
    args = list(prev.args)
    w_node = args[1]
    b_node = args[2] if len(args) > 2 else None
    if not isinstance(w_node, fx.Node) or w_node.op != "get_attr":
        return False
    if b_node is not None and (not isinstance(b_node, fx.Node) or b_node.op != "get_attr"):
        return False
    groups = int(args[groups_at]) if groups_at is not None and len(args) > groups_at else 1  # type: ignore[arg-type]
    weight = attr_tensor(gm, str(w_node.target))
    bias = None if b_node is None else attr_tensor(gm, str(b_node.target))
    w, b = fold_weights(target, _np(weight), None if bias is None else _np(bias), scale, shift,
                        groups)
    base = str(w_node.target).replace(".", "_")
    w_name = unique_name(f"{base}_folded", lambda n: hasattr(gm, n))
    gm.register_buffer(w_name, torch.from_numpy(w).to(weight.dtype))
    b_name = unique_name(f"{base}_bias_folded", lambda n: hasattr(gm, n))
    gm.register_buffer(b_name, torch.from_numpy(b).to(weight.dtype))
    with gm.graph.inserting_before(prev):
        args[1] = gm.graph.get_attr(w_name)
        b_new = gm.graph.get_attr(b_name)
    while len(args) < 3:
        args.append(None)
    args[2] = b_new
    prev.args = tuple(args)
    return True


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()

