"""Loading batches in worker processes (--workers), with torch's DataLoader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from bncheck.core.inputs.data import SampleSource
from bncheck.core.passes.runner import Loader


class _Batches(Dataset):
    """Item ``chunk`` is the batch of those sample indices, loaded by the source."""

    def __init__(self, src: SampleSource) -> None:
        self.src = src

    def __getitem__(self, chunk: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        return chunk, self.src.load(chunk)


def _as_is(item: Any) -> Any:
    return item


def parallel_loader(workers: int) -> Loader:
    """A loader that reads batches in ``workers`` processes, ahead of the model."""
    def load(src: SampleSource, chunks: list[np.ndarray]
             ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        loader = DataLoader(_Batches(src), sampler=chunks, batch_size=None, num_workers=workers,
                            collate_fn=_as_is)
        yield from loader
    return load
