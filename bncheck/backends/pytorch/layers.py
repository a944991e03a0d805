"""Normalization layers of a torch module (eager or TorchScript) or of a bare state_dict."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from bncheck.core.network.layers import Family, MomentumNote, NormLayer
from bncheck.core.network.numerics import DEFAULT_EPS

_FAMILY_BY_NAME = {
    "BatchNorm1d": Family.BATCH, "BatchNorm2d": Family.BATCH, "BatchNorm3d": Family.BATCH,
    "SyncBatchNorm": Family.BATCH, "InstanceNorm1d": Family.INSTANCE,
    "InstanceNorm2d": Family.INSTANCE, "InstanceNorm3d": Family.INSTANCE,
    "GroupNorm": Family.GROUP, "LayerNorm": Family.LAYER, "RMSNorm": Family.RMS,
}
_FROZEN_BUFFERS = ("weight", "bias", "running_mean", "running_var")


def family_of(module: nn.Module) -> Family | None:
    """The normalization family of ``module``, or None when it is not a normalization layer."""
    if isinstance(module, _BatchNorm):
        return Family.BATCH
    if isinstance(module, _InstanceNorm):
        return Family.INSTANCE
    if isinstance(module, nn.GroupNorm):
        return Family.GROUP
    if isinstance(module, nn.LayerNorm):
        return Family.LAYER
    if hasattr(nn, "RMSNorm") and isinstance(module, nn.RMSNorm):
        return Family.RMS
    if isinstance(module, torch.jit.ScriptModule):
        return _FAMILY_BY_NAME.get(getattr(module, "original_name", ""))
    if is_frozen_bn(module):
        return Family.BATCH
    return None


def is_frozen_bn(module: nn.Module) -> bool:
    """FrozenBatchNorm2d-style: BN buffers, no _BatchNorm base, no parameters, no children."""
    buffers = dict(module.named_buffers(recurse=False))
    return (not isinstance(module, _BatchNorm) and all(b in buffers for b in _FROZEN_BUFFERS)
            and not list(module.parameters(recurse=False)) and not list(module.children()))


def class_name(module: nn.Module) -> str:
    """The class a user wrote: TorchScript and exported modules remember it."""
    original = getattr(module, "original", None) or getattr(module, "original_name", None)
    return str(original) if original else type(module).__name__


def _np(t: object) -> np.ndarray | None:
    if not isinstance(t, torch.Tensor) or t.is_meta or t.numel() == 0:
        return None
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()  # per-channel vectors: small
    if t.is_complex():
        return None  # no statistics bncheck can read; the layer reports no running stats
    return t.detach().to("cpu", torch.float64).numpy().reshape(-1)


def _nbt(t: object) -> int | None:
    """The batch counter, when it is a finite whole number (files carry NaN and worse)."""
    if not isinstance(t, torch.Tensor) or t.numel() != 1 or t.is_complex():
        return None
    value = float(t.detach().to("cpu", torch.float64).item())
    return int(value) if math.isfinite(value) else None


def describe_module(name: str, module: nn.Module, family: Family) -> NormLayer:
    """A NormLayer from a live (or scripted) module."""
    kind = class_name(module)
    weight, bias = _np(getattr(module, "weight", None)), _np(getattr(module, "bias", None))
    eps_raw = getattr(module, "eps", None)
    eps = float(eps_raw) if isinstance(eps_raw, (int, float)) else None
    if family in (Family.BATCH, Family.INSTANCE):
        rm, rv = _np(getattr(module, "running_mean", None)), _np(getattr(module, "running_var", None))
        frozen = is_frozen_bn(module)
        tracks = bool(getattr(module, "track_running_stats", frozen)) and rm is not None
        momentum = getattr(module, "momentum", None)
        if frozen:
            note = MomentumNote.FROZEN
        elif momentum is None:
            note = MomentumNote.CUMULATIVE
        else:
            note = MomentumNote.TORCH
        channels = getattr(module, "num_features", None)
        if channels is None and rm is not None:
            channels = rm.size
        return NormLayer(
            name=name, kind=kind, family=family, channels=int(channels) if channels else None,
            eps=eps if eps is not None else DEFAULT_EPS, momentum=None if momentum is None
            else float(momentum), momentum_note=note,
            affine=bool(getattr(module, "affine", weight is not None)),
            tracks_running_stats=tracks, running_mean=rm, running_var=rv,
            num_batches_tracked=_nbt(getattr(module, "num_batches_tracked", None)),
            weight=weight, bias=bias,
        )
    channels = getattr(module, "num_channels", None) or getattr(module, "num_groups", None)
    if channels is None and weight is not None:
        channels = weight.size
    return NormLayer(
        name=name, kind=kind, family=family, channels=int(channels) if channels else None,
        eps=eps, momentum=None, momentum_note=MomentumNote.NONE, affine=weight is not None,
        tracks_running_stats=False, weight=weight, bias=bias,
    )


def unmodeled_norms(model: nn.Module) -> tuple[str, ...]:
    """One sentence for the modules that keep running statistics in a form bncheck does not
    model (timm's EvoNorm2dB0 divides by the batch variance in training and by a stored
    ``running_var`` in eval), or none."""
    found = [(name, class_name(m)) for name, m in model.named_modules()
             if family_of(m) is None and any(b in ("running_mean", "running_var")
                                             for b, _ in m.named_buffers(recurse=False))]
    if not found:
        return ()
    kinds = ", ".join(sorted({kind for _, kind in found}))
    return (f"{len(found)} module(s) normalize with batch statistics in training and stored "
            f"ones in eval in a form bncheck does not model ({kinds}; the first is "
            f"{found[0][0] or '(root)'}), so their train/eval gap cannot be measured",)


def discover_module(model: nn.Module) -> list[NormLayer]:
    """Every normalization layer of ``model`` in registration order."""
    out = []
    for name, m in model.named_modules():
        family = family_of(m)
        if family is not None and name:
            out.append(describe_module(name, m, family))
    return out


def discover_state_dict(sd: Mapping[str, torch.Tensor]) -> list[NormLayer]:
    """BN-like layers of a bare state_dict, found by their running_mean/running_var keys."""
    out = []
    for key in sd:
        if key != "running_mean" and not key.endswith(".running_mean"):
            continue
        p = key[: -len("running_mean")]  # "bn1." or "" for a lone layer's own state_dict
        if f"{p}running_var" not in sd:
            continue
        rm, rv = _np(sd[key]), _np(sd[f"{p}running_var"])
        weight, bias = _np(sd.get(f"{p}weight")), _np(sd.get(f"{p}bias"))
        out.append(NormLayer(
            name=p.rstrip(".") or "(root)", kind="BatchNorm", family=Family.BATCH,
            channels=None if rm is None else rm.size, eps=None, momentum=None,
            momentum_note=MomentumNote.UNKNOWN, affine=weight is not None, tracks_running_stats=True,
            running_mean=rm, running_var=rv,
            num_batches_tracked=_nbt(sd.get(f"{p}num_batches_tracked")),
            weight=weight, bias=bias,
        ))
    return out
