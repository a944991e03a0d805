"""Finding a Keras model's BatchNormalization layers and turning them into torch modules."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from bncheck.backends.keras.graph import BN_CLASS, is_batch_norm, is_graph, walk
from bncheck.backends.keras.net import KerasBatchNorm, KerasNet, KerasOptions
from bncheck.backends.pytorch.layers import discover_module
from bncheck.core.network.layers import MomentumNote, NormLayer
from bncheck.errors import BncheckError


def _array(variable: Any) -> np.ndarray:
    from bncheck.backends.keras.runtime import to_numpy

    return to_numpy(variable).astype(np.float32).reshape(-1)


def options_of(layer: Any) -> KerasOptions:
    """The layer's configuration, in Keras' terms.

    Read off the layer's attributes: its ``get_config`` imports TensorFlow when it is installed
    (Keras' serializer checks for it), which costs seconds and is not needed here.
    """
    rank = len(layer.input.shape)
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise BncheckError(f"{layer.name}: BatchNormalization over several axes {axis} has no "
                               "per-channel form bncheck can check")
        axis = axis[0]
    renorm = bool(getattr(layer, "renorm", False))
    clipping = getattr(layer, "renorm_clipping", None) or {}
    return KerasOptions(
        axis=int(axis) % rank, momentum=float(layer.momentum), center=bool(layer.center),
        scale=bool(layer.scale), trainable=bool(layer.trainable),
        synchronized=bool(getattr(layer, "synchronized", False)), renorm=renorm,
        renorm_clipping={k: float(v) for k, v in clipping.items() if v is not None},
    )


def torch_norm(layer: Any) -> KerasBatchNorm:
    """A KerasBatchNorm holding a copy of the layer's weights and statistics."""
    opts = options_of(layer)
    mean, var = _array(layer.moving_mean), _array(layer.moving_variance)
    channels = mean.size
    renorm = (torch.from_numpy(_array(layer.renorm_mean)),
              torch.from_numpy(_array(layer.renorm_stddev))) if opts.renorm else None
    module = KerasBatchNorm(channels, float(layer.epsilon), opts, renorm)
    assert module.running_mean is not None and module.running_var is not None
    with torch.no_grad():
        module.running_mean.copy_(torch.from_numpy(mean))
        module.running_var.copy_(torch.from_numpy(var))
        if opts.scale:
            module.weight.copy_(torch.from_numpy(_array(layer.gamma)))
        if opts.center:
            module.bias.copy_(torch.from_numpy(_array(layer.beta)))
    # Keras keeps no batch count; the momentum says how many batches the average spans.
    module.num_batches_tracked = None
    return module


def keras_net(model: Any) -> KerasNet:
    """The model as a torch module; the Keras model itself is not changed."""
    if not is_graph(model) or not getattr(model, "inputs", None):
        raise BncheckError(f"{getattr(model, 'name', 'the model')} is a subclassed Keras model "
                           f"({type(model).__name__} with its own call): bncheck runs "
                           "Functional and Sequential models, whose graph it can follow; build "
                           "it with keras.Input, or export it to ONNX")
    norms: dict[str, torch.nn.Module] = {}
    axes: dict[str, int] = {}
    for path, layer in walk(model):
        if is_batch_norm(layer):
            module = torch_norm(layer)
            norms[path], axes[path] = module, module.keras.axis
    return KerasNet(model, norms, axes).eval()


def describe(net: KerasNet) -> list[NormLayer]:
    """The norm layers of ``net`` in Keras' terms: its options, and its moments as torch's."""
    out = []
    for layer in discover_module(net):
        module = net.get_submodule(layer.name)
        if not isinstance(module, KerasBatchNorm):
            out.append(layer)
            continue
        opts = module.keras
        options: list[tuple[str, object]] = [("axis", opts.axis), ("keras_momentum", opts.momentum)]
        if opts.synchronized:
            options.append(("synchronized", True))
        if opts.renorm:
            options.append(("renorm", True))
            options.extend((k, v) for k, v in sorted(opts.renorm_clipping.items()))
        if not opts.trainable:
            options.append(("trainable", False))
        out.append(dataclasses.replace(
            layer, kind=BN_CLASS, affine=opts.center or opts.scale,
            momentum=round(1.0 - opts.momentum, 12),  # 1 - 0.99 is 0.010000000000000009
            weight=layer.weight if opts.scale else None, bias=layer.bias if opts.center else None,
            # A frozen Keras BN (trainable=False) normalized with its moving stats in training too.
            momentum_note=MomentumNote.KERAS if opts.trainable else MomentumNote.FROZEN,
            num_batches_tracked=None, unbiased_var=False, options=tuple(options)))
    return out
