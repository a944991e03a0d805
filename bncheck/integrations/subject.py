"""A model checked in this process through the Python API: a torch module or a live Keras model."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from bncheck import api
from bncheck.core.network.options import DEFAULT_BATCH_SIZE, Device
from bncheck.integrations.rng import preserved_rng


class ApiSubject:
    """``model()`` gives what the API takes (an :class:`api.Owned` copy, or a keras.Model it
    only reads); every check runs :func:`bncheck.compare` on it and the held-out arrays."""

    def __init__(self, model: Callable[[], Any], held: tuple[np.ndarray, ...], *,
                 train_batch_size: int | None, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: Device = Device.CPU) -> None:
        self.model = model
        self.data: Any = held[0] if len(held) == 1 else held
        self.samples = len(held[0])
        # Known from the first training batch where the framework shows it, else estimated.
        self.train_batch_size = train_batch_size
        self.batch_size = batch_size
        self.device = device

    def compare(self) -> Mapping[str, Any]:
        """compare's JSON document for the model as it is now."""
        with _no_autocast():
            return api.compare(self.model(), self.data, train_batch_size=self.train_batch_size,
                               batch_size=self.batch_size, device=self.device).to_json()

    def one_pass(self, samples: int, batch_size: int) -> None:
        """An eval-mode pass over the first ``samples`` held-out samples."""
        with _no_autocast():
            loaded = api.load(self.model(), device=self.device)
            src, runnable = api.open_data(self.data, loaded)
            n = min(samples, len(src))
            for s in range(0, n, batch_size):
                runnable.run(src.load(np.arange(s, min(s + batch_size, n))))


def private_copy(module: Any, leave_out: tuple[object, ...] = ()) -> api.Owned:
    """A deep copy of ``module`` in which each object of ``leave_out`` (a LightningModule's
    trainer) is None, so that copying it copies the network and nothing else."""
    memo: dict[int, Any] = {id(o): None for o in leave_out if o is not None}
    return api.Owned(copy.deepcopy(module, memo))


def device_of(module: Any) -> Device:
    """Where the module's parameters are: checks run there."""
    for p in module.parameters():
        return Device.CUDA if p.device.type == "cuda" else Device.CPU
    return Device.CPU


def recalibrate_in_place(module: Any, data: Any, train_batch_size: int | None,
                         leave_out: tuple[object, ...] = ()) -> int:
    """Replace ``module``'s running statistics with exact population ones on ``data`` (every
    RNG state put back); the count of buffers replaced."""
    with preserved_rng():
        fresh = api.recalibrate(private_copy(module, leave_out), data,
                                train_batch_size=train_batch_size)
    return adopt_statistics(module, fresh)


def adopt_statistics(target: Any, source: Any) -> int:
    """Copy every running mean and variance of ``source`` into the same-named buffer of
    ``target`` (same dtype and device); the count of buffers copied."""
    import torch

    buffers = dict(target.named_buffers())
    n = 0
    with torch.no_grad():
        for name, value in source.named_buffers():
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var") and name in buffers:
                buffers[name].copy_(value.to(buffers[name]))
                n += 1
    return n


@contextmanager
def _no_autocast() -> Iterator[None]:
    """A check called inside the user's autocast region (a hook in their forward) runs in full
    precision: compare's figures must not depend on where it was called from."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield
