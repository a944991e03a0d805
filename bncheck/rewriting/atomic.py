"""Never lose data: refuse to clobber, write to a temporary file, rename only after it checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bncheck.core.distributed.launch_records import record_written
from bncheck.core.inputs.paths import exists
from bncheck.errors import BncheckError

# Staged files neither committed nor removed yet: a worker stopped by a signal deletes them on
# its way out (``discard_staged``), as the ``finally`` below would have.
_PENDING: set[Path] = set()


def check_destination(out: Path, inputs: list[Path], force: bool) -> None:
    """Validate ``out`` before any work starts."""
    there = exists(out, "-o")
    for p in inputs:
        if there and exists(p, "input") and out.resolve() == p.resolve():
            raise BncheckError(f"-o {out} is one of the inputs ({p}); bncheck never writes over "
                               "its inputs")
    if out.is_dir():
        raise BncheckError(f"-o {out} is a folder; give a file name")
    if there and not force:
        raise BncheckError(f"{out} already exists; pass --force to replace it")
    if not out.parent.exists():
        raise BncheckError(f"-o {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise BncheckError(f"-o {out}: folder {out.parent} is not writable")


class Staged:
    """A temporary file beside the destination, renamed onto it by ``commit``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        # Same folder (so the rename is atomic) and same suffix (writers pick formats by it).
        self.path = out.with_name(f".{out.stem}.bncheck-{os.getpid()}{out.suffix}")

    def commit(self) -> None:
        """Atomically move the finished file into place."""
        os.replace(self.path, self.out)
        record_written(self.out)


@contextmanager
def staged_output(out: Path) -> Iterator[Staged]:
    """Yield a Staged file; whatever was not committed is deleted on the way out."""
    staged = Staged(out)
    _PENDING.add(staged.path)
    try:
        yield staged
    finally:
        _PENDING.discard(staged.path)
        if staged.path.exists():
            staged.path.unlink()


def discard_staged() -> None:
    """Delete every staged file of this process that was not committed."""
    for path in list(_PENDING):
        path.unlink(missing_ok=True)
