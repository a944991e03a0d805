"""The Keras backend's model: a :class:`TorchModel` over a :class:`KerasNet`.

Running, tapping and the reference/instance-norm/batch-stats/recalibrate passes are the torch
backend's own, on the net's torch norm modules; fold, the model's inputs and writing ``.keras``
are Keras'.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bncheck.backends.keras.build import describe, keras_net
from bncheck.backends.keras.fold import fold
from bncheck.backends.keras.graph import walk
from bncheck.backends.keras.net import KerasNet
from bncheck.backends.pytorch.model import TorchModel
from bncheck.backends.pytorch.passes import apply_pass
from bncheck.core.network.formats import ModelFormat
from bncheck.core.network.layers import NormLayer
from bncheck.core.network.model import InputSpec, LayerShapes, Model, PassResult, PopulationStats
from bncheck.core.network.options import RewriteMode


class KerasModel(TorchModel):
    """A Keras model run on Keras' torch backend (on the CPU)."""

    backend = "keras"

    def __init__(self, path: Path, fmt: ModelFormat, net: KerasNet) -> None:
        super().__init__(path, fmt, net, None, torch.device("cpu"))
        self.net = net

    @classmethod
    def of(cls, path: Path, fmt: ModelFormat, keras_model: Any) -> KerasModel:
        """Wrap a Keras model (not changed, not copied: only its norm layers are copied)."""
        return cls(path, fmt, keras_net(keras_model))

    @property
    def runs_on(self) -> str:
        """Keras on torch, and the device."""
        return "keras (torch backend) cpu"

    def layers(self) -> list[NormLayer]:
        """The BatchNormalization layers, in Keras' terms."""
        return describe(self.net)

    def runnable(self, example: Sequence[np.ndarray] | None) -> Model:
        """Always runnable: Keras runs the graph."""
        return self

    def inputs(self) -> list[InputSpec]:
        """The Keras model's inputs, in its own layout (channels-last for most)."""
        specs = []
        for tensor in self.net.graph.inputs:
            shape = tuple(None if d is None else int(d) for d in tensor.shape)
            specs.append(InputSpec(tensor.name, (None, *shape[1:]),
                                   channels_last=self.channels_last))
        return specs

    @property
    def channels_last(self) -> bool:
        """Whether the model's images are (N, H, W, C): Keras' default, unless its norm layers
        or convolutions say channels-first."""
        axes = set(self.net.axes.values())
        if axes:
            return any(a != 1 for a in axes)
        formats = {getattr(layer, "data_format", None) for _, layer in walk(self.net.graph)}
        return "channels_first" not in formats

    def apply(self, mode: RewriteMode, stats: PopulationStats | None = None,
              shapes: LayerShapes | None = None) -> PassResult:
        """Apply one pass; fold is Keras' own (into the convolution or dense layer before)."""
        if mode is RewriteMode.FOLD:
            net, notes = fold(self.net)
        else:
            spatial = {name: math.prod(s[1:]) for name, s in (shapes or {}).items()}
            module, notes = apply_pass(self.net, mode, stats, spatial)
            assert isinstance(module, KerasNet)
            net = module
        return PassResult(KerasModel(self.path, self.format, net), notes)

    def dropout_layers(self) -> list[str]:
        """Keras Dropout layers with a non-zero rate (off at inference)."""
        return [path for path, layer in walk(self.net.graph)
                if type(layer).__name__.endswith("Dropout") and float(getattr(layer, "rate", 0)) > 0]

    def save(self, path: Path, example: Sequence[np.ndarray], keep_dropout: bool = False) -> None:
        """``.keras`` through Keras itself; ``.onnx`` as the torch backend exports the net."""
        if path.suffix.lower() == ".keras":
            from bncheck.backends.keras.runtime import without_tensorflow
            from bncheck.backends.keras.save import to_keras

            with without_tensorflow():
                to_keras(self.net).save(str(path))
            return
        # The tracer takes the Keras weights (outside the module tree) as constants, which it
        # refuses while they require grad.
        with _constant(self.net):
            super().save(path, example, keep_dropout)


@contextmanager
def _constant(net: KerasNet) -> Iterator[None]:
    """The Keras model's weights and the net's replaced ops without grad, for the duration."""
    tensors = [w.value for w in net.graph.weights] + \
        [w.value for op in net.ops.values() for w in op.weights]
    flags = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(False)
        yield
    finally:
        for t, flag in zip(tensors, flags, strict=True):
            t.requires_grad_(flag)
