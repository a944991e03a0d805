"""Sample sources for live Python objects: arrays, tensors, datasets and iterables of batches.

compare reads samples several times, in shuffled order, so every source offers random access. An
iterable of batches (a DataLoader, a generator) can be read only once: its samples are parked in
a temporary file as they arrive, never all in memory. Tensors are converted by a function the
caller passes in, so this module never imports torch.
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from bncheck.core.inputs.data import ArraySource, SampleSource
from bncheck.errors import BncheckError

ToNumpy = Callable[[Any], np.ndarray]
# The key a dict item or batch keeps its model input under.
INPUT_KEY = "input"


def source_from_object(data: object, to_numpy: ToNumpy) -> SampleSource:
    """A sample source for ``data``.

    - an array or tensor: samples along axis 0;
    - a tuple of them: one per model input;
    - a map-style dataset (``__len__`` and ``__getitem__``): items are an input, a tuple or
      list whose first element is the input, or a dict with an ``input`` key;
    - any other iterable (a DataLoader, a list or generator of batches): batches of that form.
    """
    if _is_array(data):
        return ArraySource([_numpy(data, to_numpy)], "data")
    if isinstance(data, tuple) and data and all(_is_array(a) for a in data):
        return ArraySource([_numpy(a, to_numpy) for a in data], "data")
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and \
            not isinstance(data, (list, str, bytes, Mapping)):
        return DatasetSource(data, to_numpy)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        return CachedSource(data, to_numpy)
    raise BncheckError(f"data of type {type(data).__name__}: give an array, a tensor, a Dataset, "
                       "a DataLoader or an iterable of batches")


def _is_array(x: object) -> bool:
    return isinstance(x, np.ndarray) or (hasattr(x, "detach") and hasattr(x, "shape"))


def _numpy(x: Any, to_numpy: ToNumpy) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else to_numpy(x)


def model_input(item: Any, to_numpy: ToNumpy) -> np.ndarray:
    """The model input inside a dataset item or a batch."""
    if isinstance(item, Mapping):
        if INPUT_KEY not in item:
            raise BncheckError(f"a dict item needs an {INPUT_KEY!r} key; it has "
                               f"{', '.join(map(str, item))}")
        item = item[INPUT_KEY]
    elif isinstance(item, (tuple, list)):
        if not item:
            raise BncheckError("an empty item: expected an input, or (input, target)")
        item = item[0]
    if not _is_array(item):
        raise BncheckError(f"an item of type {type(item).__name__}: expected an array or tensor")
    return _numpy(item, to_numpy)


class DatasetSource:
    """A map-style dataset, read item by item."""

    def __init__(self, dataset: Any, to_numpy: ToNumpy) -> None:
        self.dataset = dataset
        self.to_numpy = to_numpy

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: np.ndarray) -> list[np.ndarray]:
        """The items at ``index``, stacked into one batch."""
        items = []
        for i in index:
            try:
                item = self.dataset[int(i)]
            except Exception as e:  # the user's own dataset: whatever it raises is theirs
                raise BncheckError(f"the dataset raised {type(e).__name__} on item {int(i)}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}") from e
            items.append(model_input(item, self.to_numpy))
        return [np.stack(items).astype(np.float32, copy=False)]


class CachedSource:
    """An iterable of batches, read once into a temporary file of fixed-size rows."""

    def __init__(self, batches: Iterable[Any], to_numpy: ToNumpy) -> None:
        # It lives as long as the samples do: closed when the source is collected (a file the
        # collector closed itself would raise a ResourceWarning).
        self._file = tempfile.TemporaryFile()  # noqa: SIM115
        weakref.finalize(self, self._file.close)
        self.shape: tuple[int, ...] | None = None
        self.n = 0
        for batch in batches:
            x = np.ascontiguousarray(model_input(batch, to_numpy), dtype=np.float32)
            if x.ndim == 0:
                raise BncheckError("a batch is a single number; batches have samples on axis 0")
            if self.shape is None:
                self.shape = x.shape[1:]
            elif x.shape[1:] != self.shape:
                raise BncheckError(f"batches have samples of shape {self.shape} and then "
                                   f"{x.shape[1:]}; every sample must have one shape")
            self._file.write(x.tobytes())
            self.n += x.shape[0]
        if self.shape is None:
            raise BncheckError("the iterable of batches is empty")
        self._row = int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return self.n

    def load(self, index: np.ndarray) -> list[np.ndarray]:
        """Rows at ``index``."""
        assert self.shape is not None
        out = np.empty((index.size, *self.shape), dtype=np.float32)
        for k, i in enumerate(index.tolist()):
            self._file.seek(i * self._row)
            out[k] = np.frombuffer(self._file.read(self._row), dtype=np.float32).reshape(self.shape)
        return [out]
