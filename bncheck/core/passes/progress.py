"""A progress sink the core reports to; the report layer decides whether and how to show it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives the stages of a long run."""

    def start(self, label: str, total: int) -> None:
        """A stage of ``total`` samples begins."""

    def advance(self, n: int) -> None:
        """``n`` more samples are done."""

    def finish(self) -> None:
        """The stage is over."""


class NoProgress:
    """Shows nothing."""

    def start(self, label: str, total: int) -> None:
        """Ignore."""

    def advance(self, n: int) -> None:
        """Ignore."""

    def finish(self) -> None:
        """Ignore."""
