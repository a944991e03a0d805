"""Fresh names for things added to a graph or module."""

from __future__ import annotations

from collections.abc import Callable


def unique_name(base: str, taken: Callable[[str], bool]) -> str:
    """``base``, or ``base_2``, ``base_3``... the first that ``taken`` rejects."""
    name, k = base, 1
    while taken(name):
        k += 1
        name = f"{base}_{k}"
    return name
