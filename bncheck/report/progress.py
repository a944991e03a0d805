"""A rich progress bar on stderr, shown only to a person watching a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bncheck.core.passes.progress import NoProgress
from bncheck.core.passes.progress import Progress as ProgressSink
from bncheck.report.console import reporting

if TYPE_CHECKING:
    from rich.progress import TaskID


class RichProgress:
    """One bar per stage."""

    def __init__(self) -> None:
        # Imported here: only a terminal shows a bar.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(TextColumn("{task.description:>12}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
        self._task: TaskID | None = None

    def start(self, label: str, total: int) -> None:
        """Begin a stage."""
        if self._task is None:
            self._bar.start()
        else:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(label, total=total)

    def advance(self, n: int) -> None:
        """Advance the current stage."""
        if self._task is not None:
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        """Stages may follow; the bar stops in ``close``."""

    def close(self) -> None:
        """Remove the bar."""
        if self._task is not None:
            self._bar.stop()
            self._task = None


def progress_for(json_output: bool) -> ProgressSink:
    """A bar when stderr is a terminal and the output is not JSON; otherwise silence."""
    if json_output or not sys.stderr.isatty() or not reporting():
        return NoProgress()
    return RichProgress()


@contextmanager
def shown_progress(json_output: bool) -> Iterator[ProgressSink]:
    """``progress_for``'s sink, its bar removed however the work ends."""
    progress = progress_for(json_output)
    try:
        yield progress
    finally:
        if isinstance(progress, RichProgress):
            progress.close()
