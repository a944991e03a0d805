"""Glue the commands share: option parsing and opening sample data for a model."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from bncheck.errors import BncheckError

FLOAT_BYTES = 4
RGB = 3
FALLBACK_BATCH_BYTES = 4 << 30

if TYPE_CHECKING:
    from bncheck.core.inputs.data import ImageOptions


def floats(text: str, option: str) -> tuple[float, ...]:
    """``0.5,0.5`` -> (0.5, 0.5), finite, or a BncheckError naming the option."""
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise BncheckError(f"{option} {text!r}: expected comma-separated numbers") from e
    if not vals:
        raise BncheckError(f"{option} is empty")
    if not all(math.isfinite(v) for v in vals):
        raise BncheckError(f"{option} {text!r}: expected finite numbers")
    return vals


def ints(text: str, option: str, count: int | None = None) -> tuple[int, ...]:
    """``32,32`` -> (32, 32) with positive values."""
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise BncheckError(f"{option} {text!r}: expected comma-separated integers") from e
    if not vals or any(v <= 0 for v in vals) or (count is not None and len(vals) != count):
        want = f"{count} " if count else ""
        raise BncheckError(f"{option} {text!r}: expected {want}positive integers")
    return vals


def sample_shape(text: str | None, option: str, batch_size: int,
                 count: int | None = None, channels: int = 1) -> tuple[int, ...] | None:
    """A per-sample shape from an option, refused when a batch of it cannot fit in memory."""
    if text is None:
        return None
    shape = ints(text, option, count)
    need = math.prod(shape) * channels * batch_size * FLOAT_BYTES
    if need > max_batch_bytes():
        raise BncheckError(f"{option} {text}: a batch of {batch_size} would take "
                           f"{need / 2**30:.1f} GiB, more than this machine can hold; give a "
                           "smaller size")
    return shape


def max_batch_bytes() -> int:
    """A quarter of the machine's memory: one batch in float32, with room for its activations."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError):  # not every system reports it
        return FALLBACK_BATCH_BYTES


def image_options(image_size: str | None, mean: str, std: str,
                  batch_size: int) -> ImageOptions:
    """Validated image options (RGB assumed for the memory check)."""
    from bncheck.core.inputs.data import ImageOptions

    size = sample_shape(image_size, "--image-size", batch_size, 2, channels=RGB)
    s = floats(std, "--std")
    if any(v == 0 for v in s):
        raise BncheckError("--std must not contain 0")
    return ImageOptions(size=(size[0], size[1]) if size else None, mean=floats(mean, "--mean"),
                        std=s)
