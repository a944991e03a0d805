"""Importing Keras on its torch backend, for bncheck's own process, only when a model needs it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from bncheck.errors import BncheckError

EXTRA = "pip install 'bncheck[keras]'"


def import_keras() -> ModuleType:
    """Keras on the torch backend; a BncheckError naming the extra when it is not installed.

    The backend is chosen when Keras is first imported, so it is set here, before that import;
    a process that already imported Keras on another backend cannot switch it.
    """
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError as e:
        raise BncheckError(f"Keras models need Keras 3 and h5py: {EXTRA}") from e
    if not keras.__version__.startswith("3."):
        raise BncheckError(f"bncheck reads Keras 3 models; this Python has Keras "
                           f"{keras.__version__}: {EXTRA}")
    backend = keras.backend.backend()
    if backend != "torch":
        raise BncheckError(f"Keras was already imported on its {backend} backend in this process; "
                           "bncheck runs Keras models on the torch backend (set "
                           "KERAS_BACKEND=torch before importing keras)")
    return keras


def to_numpy(value: Any) -> np.ndarray:
    """A Keras tensor or variable as numpy, converted by torch: ``keras.ops.convert_to_numpy``
    calls ``np.array`` on the torch tensor, which numpy 2 warns about (torch's ``__array__``
    takes no ``copy`` keyword)."""
    from keras import ops

    return np.asarray(ops.convert_to_tensor(value).detach().cpu().numpy())


@contextmanager
def without_tensorflow() -> Iterator[None]:
    """Keras' serializer imports TensorFlow, when it is installed, only to ask whether a value
    is one of its types (seconds, and log lines on stderr). No value can be while TensorFlow is
    not imported, so for the duration Keras is told it is absent."""
    if "tensorflow" in sys.modules:
        yield
        return
    from keras.src.utils.module_utils import tensorflow

    was = tensorflow._available
    tensorflow._available = False
    try:
        yield
    finally:
        tensorflow._available = was


@contextmanager
def static_padding() -> Iterator[None]:
    """While torch's ONNX exporter traces a Keras model: "same" padding sized from plain ints.

    Keras' torch backend sizes it from ``inputs.shape``, which a trace records as arithmetic on
    the input's shape; a pooling or convolution layer's padding must then be a constant, and
    the exporter refuses (Xception's MaxPooling2D on odd-sized maps). bncheck exports a fixed
    spatial size, only the batch axis being dynamic, so the traced size is the only one the
    graph takes and the constant is exact. A Keras without the private helper is left as is.
    """
    from keras.src.backend.torch import nn as backend_nn

    original = getattr(backend_nn, "_compute_padding_length", None)
    if original is None:
        yield
        return

    def static(input_length: Any, *args: Any, **kwargs: Any) -> Any:
        return original(int(input_length), *args, **kwargs)

    backend_nn._compute_padding_length = static
    try:
        yield
    finally:
        backend_nn._compute_padding_length = original
