"""The one output sink: stdout for reports, stderr for progress and messages."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

WIDTH = 100


def stdout_console() -> Console:
    """Console for the report; plain text, 100 columns, when stdout is not a terminal."""
    # Imported here: a JSON report and an error line need no rich (0.03 s of start-up).
    from rich.console import Console

    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else WIDTH,
                   highlight=False, soft_wrap=False)


def reporting() -> bool:
    """Whether this process reports: always alone, only rank 0 under torchrun."""
    return os.environ.get("RANK", "0") == "0"


def emit_json(doc: dict[str, Any]) -> None:
    """The one JSON document on stdout (progress and messages go to stderr)."""
    from bncheck.report.json_out import dumps

    sys.stdout.write(dumps(doc) + "\n")


def error_line(message: str) -> None:
    """A user error: one plain line on stderr."""
    sys.stderr.write(f"bncheck: error: {message}\n")


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
