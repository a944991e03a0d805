"""The fixed held-out set every check runs on: read once, kept as arrays."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from bncheck.core.inputs.sources import model_input
from bncheck.errors import BncheckError
from bncheck.integrations.rng import preserved_rng


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device), a TensorFlow or Keras tensor, or an array, as numpy."""
    if hasattr(x, "detach"):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)


def held_out(data: Any, samples: int) -> tuple[np.ndarray, ...]:
    """The first ``samples`` samples of ``data``, one array per model input.

    ``data`` is what :func:`bncheck.compare` takes: an array or tensor, a tuple of them (one per
    input), a map-style dataset, a DataLoader or any iterable of batches (items and batches are
    an input, ``(input, target, ...)`` or ``{"input": ...}``). It is read once, with every RNG
    state put back afterwards (a shuffling DataLoader draws its order from torch's), so every
    check sees the same samples.
    """
    if samples < 1:
        raise BncheckError(f"samples={samples}: a check needs at least one held-out sample")
    with preserved_rng():
        arrays = _read(data, samples)
    if not arrays or len(arrays[0]) == 0:
        raise BncheckError("the held-out data is empty: give the callback samples to check on")
    return arrays


def _read(data: Any, samples: int) -> tuple[np.ndarray, ...]:
    if _is_array(data):
        return (to_numpy(data[:samples]),)
    if isinstance(data, tuple) and data and all(_is_array(a) for a in data):
        return tuple(to_numpy(a[:samples]) for a in data)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and \
            not isinstance(data, (list, str, bytes, Mapping)):
        items = [model_input(data[i], to_numpy) for i in range(min(samples, len(data)))]
        return (np.stack(items),) if items else ()
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        batches, n = [], 0
        for batch in data:
            b = model_input(batch, to_numpy)
            batches.append(b[:samples - n])
            n += len(batches[-1])
            if n >= samples:
                break
        return (np.concatenate(batches),) if batches else ()
    raise BncheckError(f"held-out data of type {type(data).__name__}: give an array, a tensor, "
                       "a Dataset, a DataLoader or an iterable of batches")


def _is_array(x: object) -> bool:
    return isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "__getitem__")
                                         and not isinstance(x, (list, tuple)))
