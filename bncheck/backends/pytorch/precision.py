"""bncheck's own forward passes run in full float32: TF32 and reduced-precision matmul off.

torch runs convolutions in TF32 on Ampere and newer GPUs by default (about 1e-3 relative error),
which is larger than the differences bncheck measures and verifies. Each pass switches the
settings off and restores the user's afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrecisionSettings:
    """The settings that decide float32 precision on a GPU."""

    cudnn_tf32: bool
    matmul_tf32: bool
    matmul_precision: str

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"cudnn_tf32": self.cudnn_tf32, "matmul_tf32": self.matmul_tf32,
                "matmul_precision": self.matmul_precision}


# What bncheck runs its passes with.
POLICY = PrecisionSettings(cudnn_tf32=False, matmul_tf32=False, matmul_precision="highest")


def current() -> PrecisionSettings:
    """The process's settings now (the user's, outside bncheck's passes)."""
    return PrecisionSettings(torch.backends.cudnn.allow_tf32,
                             torch.backends.cuda.matmul.allow_tf32,
                             torch.get_float32_matmul_precision())


def _apply(s: PrecisionSettings) -> None:
    torch.backends.cudnn.allow_tf32 = s.cudnn_tf32
    torch.backends.cuda.matmul.allow_tf32 = s.matmul_tf32
    torch.set_float32_matmul_precision(s.matmul_precision)


@contextmanager
def full_precision() -> Iterator[None]:
    """Run the block under ``POLICY``, then restore what was set before."""
    before = current()
    _apply(POLICY)
    try:
        yield
    finally:
        _apply(before)
