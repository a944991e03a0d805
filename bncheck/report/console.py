"""The one output sink: stdout for reports, stderr for progress and messages."""

from __future__ import annotations

import sys

from rich.console import Console

WIDTH = 100


def stdout_console(width: int | None = None) -> Console:
    """Console for the report; plain text when stdout is not a terminal."""
    return Console(file=sys.stdout, width=width or (None if sys.stdout.isatty() else WIDTH),
                   highlight=False, soft_wrap=False)


SEVERITY_STYLE = {"error": "bold red", "warn": "yellow", "info": "cyan"}


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Compact number formatting for tables."""
    if x is None:
        return "-"
    if x != x:  # NaN
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"
