"""The small interface both backends implement, and the loader that picks one lazily."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from bncheck.backends.detect import ModelFormat, detect_format
from bncheck.core.layers import NormLayer
from bncheck.core.moments import Moments
from bncheck.core.options import Device, RewriteMode
from bncheck.errors import BncheckError

TapFn = Callable[[str, np.ndarray], None]
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
            on_tap: TapFn | None = None) -> np.ndarray:
        """Run one batch; returns outputs flattened per sample, shape (N, D), float32.

        For every layer named in ``taps`` the layer's input is passed to ``on_tap``.
        """
        ...

    def apply(self, mode: RewriteMode, stats: PopulationStats | None = None) -> PassResult:
        """Apply one rewrite pass to a copy."""
        ...

    def dropout_layers(self) -> list[str]:
        """Dropout layers (off in eval mode, in the reference and in written models)."""
        ...

    def save(self, path: Path, example: Sequence[np.ndarray], keep_dropout: bool = False) -> None:
        """Write to ``path``, format by suffix, as vetted by ``rewrite.matrix.check_output``.

        ``keep_dropout`` writes an .onnx whose Dropout layers stay active at inference.
        """
        ...


def load_model(path: Path, *, allow_pickle: bool = False, arch: str | None = None,
               device: Device = Device.CPU) -> Model:
    """Load ``path`` with the backend its content calls for; torch is imported only if needed."""
    fmt = detect_format(path)
    if fmt is ModelFormat.ONNX:
        if arch is not None:
            raise BncheckError(
                f"--arch applies to PyTorch state_dicts; {path} is ONNX and carries its own graph"
            )
        from bncheck.backends.onnxrt.model import OnnxModel

        return OnnxModel.load(path, device=device)
    from bncheck.backends.pytorch.model import load_torch_model

    return load_torch_model(path, fmt, allow_pickle=allow_pickle, arch=arch, device=device)

