"""Dataset factories for ``--data tests.support.datasets:FACTORY`` in the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

DIGITS = Path(__file__).resolve().parents[2] / "fixtures" / "data" / "digits_x.npy"
# The item a faulty dataset cannot read: batch 12 at batch size 16, which rank 0 of 2 runs ...
BAD_ITEM = 205
# ... and one in batch 13, which the last rank (1 of 2) runs.
BAD_ITEM_LAST_RANK = 213


class Digits(Dataset):  # type: ignore[type-arg]
    """The digits fixture as (image, label) items; optionally unreadable at one item."""

    def __init__(self, bad: int | None = None) -> None:
        self.x = np.load(DIGITS)
        self.bad = bad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == self.bad:
            raise ValueError(f"record {i} is corrupt")
        return torch.from_numpy(self.x[i]), 0


def digits() -> Dataset:  # type: ignore[type-arg]
    """Every digit."""
    return Digits()


def faulty_digits() -> Dataset:  # type: ignore[type-arg]
    """Digits with one unreadable record."""
    return Digits(bad=BAD_ITEM)


def faulty_digits_last_rank() -> Dataset:  # type: ignore[type-arg]
    """Digits with one unreadable record in the last rank's share."""
    return Digits(bad=BAD_ITEM_LAST_RANK)


class _Dies(Digits):
    """Rank 1 of 2 is killed outright (SIGKILL, as the OOM killer does) on its third batch."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import os
        import signal

        if os.environ.get("RANK") == "1" and i == DIES_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


# An item in batch 5 at batch size 16, which rank 1 of 2 runs.
DIES_AT = 85


def dying_digits() -> Dataset:  # type: ignore[type-arg]
    """Digits whose reader on rank 1 is killed mid-run."""
    return _Dies()
