"""Writing a rewritten :class:`KerasNet` back as a Keras model, layer for layer."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bncheck.backends.keras.graph import walk
from bncheck.backends.keras.load import read_model
from bncheck.backends.keras.net import KerasBatchNorm, KerasNet
from bncheck.backends.keras.runtime import import_keras
from bncheck.backends.pytorch.modules import ScaleShift, StatNorm


def to_keras(net: KerasNet) -> Any:
    """A new Keras model computing what ``net`` computes: each norm slot as the Keras layer
    that does what its module does; the user's model is copied first, never changed.

    Call it inside ``without_tensorflow()``, as saving its result must be too.
    """
    keras = import_keras()
    copy = _copy(keras, net.graph)
    layers = dict(walk(copy))
    swaps: dict[int, Any] = {}
    for name, module in net.named_children():
        layer = layers[name]
        new = _keras_layer(keras, layer, module, net.axes[name])
        if new is not None:
            swaps[id(layer)] = new
    for path, op in net.ops.items():
        fresh = type(op).from_config(op.get_config())
        fresh.build(layers[path].input.shape)
        fresh.set_weights(op.get_weights())
        swaps[id(layers[path])] = fresh
    if not swaps:
        return copy
    replaced = {id(layer) for layer in swaps.values()}

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        # A BN node's call carries BN's own keywords (mask, training); its stand-in takes none.
        return layer(*args) if id(layer) in replaced else layer(*args, **kwargs)

    return keras.models.clone_model(copy, clone_function=lambda layer: swaps.get(id(layer), layer),
                                    call_function=call, recursive=True)


def _copy(keras: Any, model: Any) -> Any:
    # A saved and reloaded copy: independent weights, and the same config and names.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "copy.keras"
        model.save(str(path))
        return read_model(keras, path, safe_mode=False)


def _vec(t: torch.Tensor | None, channels: int, fill: float) -> np.ndarray:
    if t is None:
        return np.full(channels, fill, np.float32)
    return t.detach().cpu().double().numpy().reshape(-1).astype(np.float32)


def _keras_layer(keras: Any, layer: Any, module: nn.Module, axis: int) -> Any:
    """The layer to put in place of ``layer``; None to keep it (its variables updated)."""
    if isinstance(module, KerasBatchNorm):
        # Eval BN, perhaps recalibrated: the copy's own layer with the module's statistics.
        layer.moving_mean.assign(_vec(module.running_mean, 0, 0.0))
        layer.moving_variance.assign(_vec(module.running_var, 0, 1.0))
        return None
    shape = layer.input.shape
    channels = int(shape[axis])
    if isinstance(module, nn.Identity):
        return keras.layers.Identity(name=layer.name)
    if isinstance(module, ScaleShift) and len(shape) == 4 and axis == 3:
        # A 1x1 depthwise convolution is exactly the per-channel x * scale + shift.
        new = keras.layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
        new.build(shape)
        new.set_weights([_vec(module.scale, channels, 1.0).reshape(1, 1, channels, 1),
                         _vec(module.shift, channels, 0.0)])
        return new
    if isinstance(module, ScaleShift):
        # BN with mean 0 and variance 1 - eps: x * gamma + beta up to rounding.
        eps = float(layer.epsilon)
        new = keras.layers.BatchNormalization(axis=axis, epsilon=eps, name=layer.name)
        new.build(shape)
        new.set_weights([_vec(module.scale, channels, 1.0), _vec(module.shift, channels, 0.0),
                         np.zeros(channels, np.float32), np.full(channels, 1.0 - eps, np.float32)])
        return new
    assert isinstance(module, StatNorm), f"no Keras form for {type(module).__name__}"
    gamma, beta = _vec(module.gamma, channels, 1.0), _vec(module.beta, channels, 0.0)
    spatial = math.prod(int(d) for i, d in enumerate(shape) if i not in (0, axis) and d)
    if module.per_sample and not (module.keep_no_spatial and spatial == 1):
        new = keras.layers.GroupNormalization(groups=channels, axis=axis, epsilon=module.eps,
                                              name=layer.name)
        new.build(shape)
        new.set_weights([gamma, beta])
        return new
    if module.per_sample:
        return None  # one value per channel per sample: stays on its moving statistics
    from bncheck.backends.keras.layers import BatchStatNormalization

    new = BatchStatNormalization(axis=axis, epsilon=module.eps,
                                 keep_no_spatial=module.keep_no_spatial, name=layer.name)
    new.build(shape)
    new.set_weights([gamma, beta, _vec(module.running_mean, channels, 0.0),
                     _vec(module.running_var, channels, 1.0)])
    return new
