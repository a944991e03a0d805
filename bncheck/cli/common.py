"""Glue the commands share: option parsing and opening sample data for a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bncheck.errors import BncheckError

if TYPE_CHECKING:
    from bncheck.core.data import ImageOptions


def floats(text: str, option: str) -> tuple[float, ...]:
    """``0.5,0.5`` -> (0.5, 0.5), or a BncheckError naming the option."""
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise BncheckError(f"{option} {text!r}: expected comma-separated numbers") from e
    if not vals:
        raise BncheckError(f"{option} is empty")
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


def image_options(image_size: str | None, mean: str, std: str) -> ImageOptions:
    """Validated image options."""
    from bncheck.core.data import ImageOptions

    size = ints(image_size, "--image-size", 2) if image_size else None
    s = floats(std, "--std")
    if any(v == 0 for v in s):
        raise BncheckError("--std must not contain 0")
    return ImageOptions(size=(size[0], size[1]) if size else None, mean=floats(mean, "--mean"),
                        std=s)
