"""The error sentences of the workers of bncheck's own launch (``--nproc-per-node``).

Each worker records the sentence it refused with in the launch folder; the launcher reads them
back, so a fault that only one rank met is reported once, though only rank 0 prints.
"""

from __future__ import annotations

import os
from pathlib import Path

# The folder the launcher hands its workers.
LAUNCH_DIR_ENV = "BNCHECK_LAUNCH_DIR"
_PREFIX = "error-"


def launched_rank() -> str | None:
    """This worker's rank when bncheck's own launch started it, else None."""
    return os.environ.get("RANK", "0") if LAUNCH_DIR_ENV in os.environ else None


def record_error(message: str) -> None:
    """Under bncheck's launch, leave this rank's error sentence for the launcher."""
    rank = launched_rank()
    if rank is not None:
        path = Path(os.environ[LAUNCH_DIR_ENV]) / f"{_PREFIX}{rank}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(message)
        tmp.replace(path)


def recorded_errors(folder: Path) -> dict[int, str]:
    """The sentence each rank recorded in ``folder``, by rank."""
    out = {}
    for path in folder.glob(f"{_PREFIX}*"):
        rank = path.name[len(_PREFIX):]
        if rank.isdigit():
            out[int(rank)] = path.read_text(errors="replace").strip()
    return out
