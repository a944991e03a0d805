"""Working as one of several processes (torchrun), or alone: the few operations compare needs.

Every pass splits its batches over the processes (batch k goes to rank k mod world), so each
batch holds the same samples, in the same order, at the same size as in one process: the
per-sample summaries are identical, and only the float64 merge order differs (docs/design.md,
"Sharding"). The core sees this protocol; the torch.distributed implementation lives in the torch
backend and is loaded only under torchrun.
"""

from __future__ import annotations

from typing import Any, Protocol

from bncheck.errors import BncheckError


class Collective(Protocol):
    """The processes working on one job."""

    rank: int
    world: int

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order, on every rank."""
        ...

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        ...


class Alone:
    """One process: nothing to share."""

    rank = 0
    world = 1

    def gather(self, obj: Any) -> list[Any]:
        """Just ``obj``."""
        return [obj]

    def barrier(self) -> None:
        """Nothing to wait for."""


def agree_on_errors(collective: Collective, error: str | None) -> None:
    """Raise on every rank the first rank's user error, so a fault ends the whole job alike."""
    if collective.world == 1:
        if error is not None:
            raise BncheckError(error)
        return
    errors = [e for e in collective.gather(error) if e is not None]
    if errors:
        raise BncheckError(errors[0])
