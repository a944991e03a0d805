"""A Keras model as a torch module whose BatchNormalization layers are torch norm modules.

Keras 3 layers on the torch backend are ``nn.Module``s and run eagerly on torch tensors, so the
Keras graph is run as it is, layer by layer, except that each ``BatchNormalization`` is computed
by a :class:`KerasBatchNorm` registered under the layer's Keras path ("encoder/bn1"). The torch
backend then finds, taps and replaces those modules exactly as it does a torch model's, and the
Keras model itself is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from bncheck.backends.keras.graph import is_graph, is_sequential
from bncheck.backends.keras.runtime import static_padding


@dataclass(frozen=True)
class KerasOptions:
    """What a Keras ``BatchNormalization`` was configured with, kept for reports and writing."""

    axis: int  # the channel axis, counted from 0 in the layer's input (batch axis included)
    momentum: float  # Keras' convention: the weight of the old average
    center: bool
    scale: bool
    trainable: bool
    synchronized: bool
    renorm: bool
    renorm_clipping: Mapping[str, float]


class KerasBatchNorm(_BatchNorm):
    """Keras' BatchNormalization in torch terms, on channels-first input (any rank >= 2).

    Keras' ``moving_variance`` is the average of *biased* batch variances (torch averages
    unbiased ones), so ``unbiased_running_var`` is False; a layer with ``trainable=False``
    normalized with its moving statistics in training too, and does so in train mode here; with
    ``renorm`` train mode applies Batch Renormalization's clipped correction as Keras does.
    """

    unbiased_running_var = False
    renorm_mean: torch.Tensor
    renorm_stddev: torch.Tensor

    def __init__(self, channels: int, eps: float, opts: KerasOptions,
                 renorm_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__(channels, eps=eps, momentum=1.0 - opts.momentum)
        self.original = "BatchNormalization"
        self.keras = opts
        if renorm_stats is not None:
            self.register_buffer("renorm_mean", renorm_stats[0])
            self.register_buffer("renorm_stddev", renorm_stats[1])

    def _check_input_dim(self, input: torch.Tensor) -> None:
        """Any rank >= 2: the Keras graph fixed it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` (N, C, *spatial) as the Keras layer does in this module's mode."""
        if not self.training or not self.keras.trainable:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        if not self.keras.renorm:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return self._renormalized(x)

    def _renormalized(self, x: torch.Tensor) -> torch.Tensor:
        dims = (0, *range(2, x.dim()))
        mean = x.mean(dims)
        std = torch.sqrt(x.var(dims, unbiased=False) + self.eps)
        floor = torch.sqrt(torch.tensor(self.eps, dtype=x.dtype))
        renorm_std = torch.maximum(self.renorm_stddev, floor)
        r = std / renorm_std
        d = (mean - self.renorm_mean) / renorm_std
        clip = self.keras.renorm_clipping
        if "rmin" in clip:
            r = torch.clamp(r, min=clip["rmin"])
        if "rmax" in clip:
            r = torch.clamp(r, max=clip["rmax"])
        if "dmax" in clip:
            d = torch.clamp(d, -clip["dmax"], clip["dmax"])
        shape = (1, -1) + (1,) * (x.dim() - 2)
        normalized = (x - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        assert self.weight is not None and self.bias is not None
        return normalized * self.weight.view(shape) + self.bias.view(shape)


Op = Callable[..., Any]


class KerasNet(torch.nn.Module):
    """Runs a Keras functional or Sequential model with its norm layers taken from this module.

    The Keras model is held outside the module tree, so ``named_modules`` lists only the norm
    modules; ``axes`` maps each to its Keras channel axis, and ``ops`` holds Keras layers that a
    pass put in place of the model's own (a convolution with a BN folded into it).
    """

    graph: Any
    ops: dict[str, Any]
    axes: dict[str, int]

    def __init__(self, graph: Any, norms: Mapping[str, torch.nn.Module], axes: Mapping[str, int],
                 ops: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "ops", dict(ops or {}))
        self.axes = dict(axes)
        for name, module in norms.items():
            self.add_module(name, module)

    def __deepcopy__(self, memo: dict[int, Any]) -> KerasNet:
        """Copies the norm modules; the Keras model and replaced ops are shared, never changed."""
        norms = {name: copy.deepcopy(m, memo) for name, m in self.named_children()}
        new = KerasNet(self.graph, norms, self.axes, self.ops)
        new.train(self.training)
        return new

    def forward(self, *inputs: torch.Tensor) -> Any:
        """The Keras model's outputs for ``inputs`` (in the model's own layout)."""
        if torch.jit.is_tracing():
            with static_padding():
                return self._run(self.graph, list(inputs), "")
        return self._run(self.graph, list(inputs), "")

    def _run(self, graph: Any, inputs: list[Any], prefix: str) -> Any:
        if is_sequential(graph):
            x = inputs[0]
            for layer in graph.layers:
                x = self._op(layer, prefix)(x)
            return x
        outputs = graph._run_through_graph(inputs, operation_fn=lambda op: self._op(op, prefix))
        return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs

    def _op(self, op: Any, prefix: str) -> Op:
        path = prefix + op.name
        if path in self.axes:
            return lambda x, *_args, **_kwargs: self._norm(path, x)
        if path in self.ops:
            return self.ops[path]
        if is_graph(op):
            return lambda *args, **_kwargs: self._run(op, _flat(args), path + "/")
        return op

    def _norm(self, path: str, x: torch.Tensor) -> torch.Tensor:
        axis = self.axes[path] % x.dim()
        module = self.get_submodule(path)
        if axis == 1:
            return module(x)
        return module(x.movedim(axis, 1)).movedim(1, axis)


def _flat(args: tuple[Any, ...]) -> list[Any]:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    return list(args)


