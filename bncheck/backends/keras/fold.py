"""Fold for Keras models: each BatchNormalization into the Conv or Dense layer that feeds it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bncheck.backends.keras.graph import walk
from bncheck.backends.keras.net import KerasBatchNorm, KerasNet
from bncheck.backends.pytorch.modules import ScaleShift
from bncheck.backends.pytorch.passes import scale_shift_of

# Keras layers by where their kernel holds the output channel: Conv (*kernel, in / groups, out)
# and Dense (in, out) last, ConvTranspose (*kernel, out, in) second to last.
_LAST = ("Conv1D", "Conv2D", "Conv3D", "Dense")
_SECOND_TO_LAST = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


def fold(net: KerasNet) -> tuple[KerasNet, list[str]]:
    """A new net in which each BN became part of the layer before it, or a scale and shift.

    The user's layers are not changed: a folded convolution is a new Keras layer built from the
    old one's config and weights.
    """
    layers = dict(walk(net.graph))
    norms: dict[str, nn.Module] = dict(net.named_children())
    ops = dict(net.ops)
    notes = []
    for name, module in list(norms.items()):
        if not isinstance(module, KerasBatchNorm):
            continue
        scale, shift = scale_shift_of(name, module)
        prev = _foldable_input(layers[name], net.axes[name], name)
        if prev is None:
            norms[name] = ScaleShift(torch.from_numpy(scale).float(), torch.from_numpy(shift).float())
            notes.append(f"{name}: follows no foldable layer; became a per-channel scale and shift")
            continue
        prev_path, prev_layer = prev
        ops[prev_path] = _folded(ops.get(prev_path, prev_layer), scale, shift)
        norms[name] = nn.Identity()
        notes.append(f"{name}: folded into {prev_path}")
    return KerasNet(net.graph, norms, net.axes, ops).eval(), notes


def _foldable_input(bn: Any, axis: int, path: str) -> tuple[str, Any] | None:
    """The Conv/Dense layer whose output only this BN reads, over the channel axis it writes."""
    history = getattr(bn.input, "_keras_history", None)
    if history is None:
        return None
    prev = history[0]
    if type(prev).__name__ not in (*_LAST, *_SECOND_TO_LAST) or len(prev._inbound_nodes) != 1:
        return None
    if len(prev._outbound_nodes) != 1 or getattr(prev, "activation", None) is None or \
            prev.activation.__name__ != "linear":
        return None
    rank = len(bn.input.shape)
    channels_last = getattr(prev, "data_format", "channels_last") == "channels_last"
    if axis != (rank - 1 if channels_last else 1):
        return None
    prefix = path.rpartition("/")[0]
    return (f"{prefix}/{prev.name}" if prefix else prev.name), prev


def _folded(layer: Any, scale: np.ndarray, shift: np.ndarray) -> Any:
    from bncheck.backends.keras.runtime import to_numpy, without_tensorflow

    with without_tensorflow():
        config = {**layer.get_config(), "use_bias": True}
    weights = [to_numpy(w).astype(np.float64) for w in layer.weights]
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros(scale.size)
    new = type(layer).from_config(config)
    new.build(layer.input.shape)
    per_channel = scale if type(layer).__name__ in _LAST else scale[:, None]
    new.set_weights([(kernel * per_channel).astype(np.float32),
                     (bias * scale + shift).astype(np.float32)])
    return new
