"""The model interface both backends implement, and the types that cross it.

It lives in core: the backends import it, and core never imports a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from bncheck.core.network.formats import ModelFormat
from bncheck.core.network.layers import NormLayer
from bncheck.core.network.moments import Moments
from bncheck.core.network.options import RewriteMode


@dataclass(frozen=True)
class TapSummary:
    """One batch of a layer's input, reduced where it lives (the device, or inside the graph).

    Only these (N, C) arrays cross into the core, never whole activations.
    """

    mean: np.ndarray  # (N, C) float64: each sample's channel means
    m2: np.ndarray  # (N, C) float64: each sample's sum of squared deviations from its mean
    shape: tuple[int, ...]  # one sample's shape, (C, *spatial)


TapFn = Callable[[str, TapSummary], None]
# Per layer: the per-sample shape of its input, (C, *spatial), as seen in a run. Passes use it
# to keep layers with one value per channel per sample ((N, C), 1x1 maps) on running stats.
LayerShapes = Mapping[str, tuple[int, ...]]
# Per layer: float64 moments of the layer's input over all sample data (recalibrate's input).
PopulationStats = Mapping[str, Moments]


@dataclass(frozen=True)
class InputSpec:
    """One model input; ``None`` in ``shape`` is a dimension the model leaves free."""

    name: str
    shape: tuple[int | None, ...]
    # Read off the architecture (the first conv's channels), not declared by the model: data of
    # another shape is tried on the model rather than refused.
    guessed: bool = False
    # (N, *spatial, C), as Keras models take images, rather than (N, C, *spatial).
    channels_last: bool = False


@dataclass(frozen=True)
class PassResult:
    """A rewritten model and what the pass did, one plain sentence per note."""

    model: Model
    notes: list[str]


class Model(Protocol):
    """A loaded model. Passes return new models and never mutate the one they are given."""

    path: Path
    format: ModelFormat
    backend: str
    # The largest batch the model runs (a graph with a fixed batch size), or None.
    max_batch: int | None
    # What the backend changed or assumed to make the model runnable, one sentence each.
    notes: tuple[str, ...]
    # Normalization the file shows traces of that no layer maps (folded into a convolution,
    # statistics no node reads), one sentence each naming what to give bncheck instead: with
    # any, nothing may be said of the model as a whole.
    hidden: tuple[str, ...]
    # How the file's exporter keeps BatchNorm a layer (None: the file is the framework's own).
    keep_bn: str | None
    # The float precision bncheck's passes ran at, where the backend sets it (JSON-ready).
    precision: Mapping[str, object] | None

    @property
    def float_eps(self) -> float:
        """The rounding step of the model's floating type (float32, or half precision)."""
        ...

    @property
    def runs_on(self) -> str:
        """Runtime and device, as a check reports them ("torch cuda:0")."""
        ...

    def layers(self) -> list[NormLayer]:
        """Normalization layers in execution (or file) order."""
        ...

    def runnable(self, example: Sequence[np.ndarray] | None) -> Model:
        """A model that can run and be rewritten (self, or a converted copy); BncheckError if not."""
        ...

    def inputs(self) -> list[InputSpec]:
        """The inputs a runnable model takes."""
        ...

    def run(self, batch: Sequence[np.ndarray], taps: Sequence[str] = (),
            on_tap: TapFn | None = None, stop_after: int | None = None) -> np.ndarray:
        """Run one batch; returns outputs flattened per sample, shape (N, D), float32.

        For every layer named in ``taps`` a summary of the layer's input goes to ``on_tap``.
        With ``stop_after``, only the first that many of ``taps`` (in the order their summaries
        come) are summarized, the rest of the network need not run, and the outputs are (N, 0):
        for passes that read only the layers nearest the input.
        """
        ...

    def apply(self, mode: RewriteMode, stats: PopulationStats | None = None,
              shapes: LayerShapes | None = None) -> PassResult:
        """Apply one rewrite pass to a copy; ``shapes`` as a tapped run saw them."""
        ...

    def dropout_layers(self) -> list[str]:
        """Dropout layers (off in eval mode, in the reference and in written models)."""
        ...

    def save(self, path: Path, example: Sequence[np.ndarray], keep_dropout: bool = False) -> None:
        """Write to ``path``, format by suffix, as vetted by ``rewrite.matrix.check_output``.

        ``keep_dropout`` writes an .onnx whose Dropout layers stay active at inference.
        """
        ...
