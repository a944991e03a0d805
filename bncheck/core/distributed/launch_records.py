"""What the workers of bncheck's own launch (``--nproc-per-node``) leave for the launcher.

Each worker records the sentence it refused with in the launch folder; the launcher reads them
back, so a fault that only one rank met is reported once, though only rank 0 prints. A worker
that committed an output records that too, so a job stopped afterwards is not said to have
written nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

# The folder the launcher hands its workers.
LAUNCH_DIR_ENV = "BNCHECK_LAUNCH_DIR"
_PREFIX = "error-"
_WRITTEN = "written-"


def interrupted(signal_name: str, written: list[str] | None = None) -> str:
    """The launcher's sentence for a job that a signal stopped (Ctrl-C is SIGINT), given the
    outputs rank 0 had already committed (``recorded_writes``)."""
    if written:
        return (f"interrupted by {signal_name} after {', '.join(written)} was written and "
                "verified: every process stopped")
    return f"interrupted by {signal_name}: every process stopped and nothing was written"


def launched_rank() -> str | None:
    """This worker's rank when bncheck's own launch started it, else None."""
    return os.environ.get("RANK", "0") if LAUNCH_DIR_ENV in os.environ else None


def record_error(message: str) -> None:
    """Under bncheck's launch, leave this rank's error sentence for the launcher."""
    rank = launched_rank()
    if rank is not None:
        _record(f"{_PREFIX}{rank}", message)


def _record(name: str, text: str) -> None:
    # Written whole, then renamed: the launcher never reads half a record.
    path = Path(os.environ[LAUNCH_DIR_ENV]) / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def record_written(out: Path) -> None:
    """Under bncheck's launch, tell the launcher that this rank committed ``out``: a signal
    that stops the job afterwards must not say that nothing was written."""
    rank = launched_rank()
    if rank is not None:
        _record(f"{_WRITTEN}{rank}", str(out))


def recorded_writes(folder: Path) -> list[str]:
    """The outputs the ranks recorded as committed in ``folder``."""
    return sorted(p.read_text(errors="replace") for p in folder.glob(f"{_WRITTEN}*")
                  if p.suffix != ".tmp")


def recorded_errors(folder: Path) -> dict[int, str]:
    """The sentence each rank recorded in ``folder``, by rank."""
    out = {}
    for path in folder.glob(f"{_PREFIX}*"):
        rank = path.name[len(_PREFIX):]
        if rank.isdigit():
            out[int(rank)] = path.read_text(errors="replace").strip()
    return out
