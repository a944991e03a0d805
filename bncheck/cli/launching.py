"""``--nproc-per-node N``: read off the command line before typer, since the workers rerun it.

The workers get the same arguments without the option, so each runs the command as one rank of
the job (``WORLD_SIZE`` set); this process only waits for them and exits with the job's code.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from types import FrameType

from bncheck.core.distributed.launch_records import LAUNCH_DIR_ENV, interrupted, launched_rank
from bncheck.errors import BncheckError
from bncheck.extras import requires
from bncheck.report.console import error_line

OPTION = "--nproc-per-node"
# The commands that run passes over the data, and so can share them out.
COMMANDS = ("compare", "rewrite")


def launch_request(argv: list[str]) -> tuple[list[str], int] | None:
    """(the workers' arguments, N) when ``argv`` asks for N > 1 processes, else None.

    A malformed value is left to typer, which refuses it with its usual message; so is the
    option under torchrun, where ``check_single_launch`` refuses it.
    """
    if not argv or argv[0] not in COMMANDS or "WORLD_SIZE" in os.environ:
        return None
    for i, arg in enumerate(argv):
        if arg == "--":
            return None
        if arg == OPTION and i + 1 < len(argv):
            value, rest = argv[i + 1], argv[:i] + argv[i + 2:]
        elif arg.startswith(OPTION + "="):
            value, rest = arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
        else:
            continue
        n = int(value) if value.isdigit() else 0
        return (rest, n) if n > 1 else None
    return None


def run_launched(args: list[str], nproc: int) -> int:
    """Run the workers; print the job's one sentence if no rank printed it; its exit code."""
    # Until torch's agent takes SIGINT over, as it starts the workers, a Ctrl-C ends this
    # process here. Raised as KeyboardInterrupt it could surface inside torch's import or its
    # rendezvous, in C++ that pybind11 cannot unwind: "terminate called after throwing an
    # instance of 'pybind11::error_already_set'", exit -6.
    signal.signal(signal.SIGINT, _stop_before_launch)
    try:
        # torch's elastic agent starts and joins the workers, whatever the model's format.
        with requires(OPTION, "torch"):
            from bncheck.backends.pytorch.launch import launch

            outcome = launch(args, nproc)
    except BncheckError as e:
        error_line(str(e))
        return 2
    for message in outcome.messages:
        error_line(message)
    return outcome.code


def _stop_before_launch(signum: int, frame: FrameType | None) -> None:
    """SIGINT before any worker started: the job's sentence, then exit at once (raise nothing)."""
    error_line(interrupted(signal.Signals(signum).name))
    sys.stderr.flush()
    # The launch folder, made just before the agent starts, holds nothing yet.
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(128 + signum)


def worker_exit(code: int | str | None) -> int | str | None:
    """The exit code a worker of bncheck's launch ends with: rank 0's own, 0 elsewhere.

    Every rank reaches the same verdict, or the same agreed error, and rank 0 reports it. A
    rank that ended non-zero first would make the launcher stop rank 0 before it printed.
    """
    rank = launched_rank()
    return code if rank is None or rank == "0" else 0


def stop_worker_on_interrupt() -> None:
    """Under bncheck's launch, end this worker on SIGINT without raising KeyboardInterrupt.

    The launcher passes a Ctrl-C on to its workers as SIGINT and prints the job's one sentence
    itself. Raised as KeyboardInterrupt, the signal can surface inside torch's C++ collectives,
    which pybind11 cannot unwind: the worker aborts with "terminate called after throwing an
    instance of 'pybind11::error_already_set'" on the user's terminal. This handler deletes the
    staged outputs instead, then lets the signal end the process. (SIGTERM, which the launcher
    sends when another rank fails, keeps its default: it ends a worker at once, even inside a
    collective that waits for the failed rank.)
    """
    if launched_rank() is None:
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        # Nothing is staged unless a rewrite imported the module (no import in a handler).
        atomic = sys.modules.get("bncheck.rewriting.atomic")
        if atomic is not None:
            atomic.discard_staged()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGINT, stop)


def check_single_launch(nproc: int) -> None:
    """Refuse ``--nproc-per-node`` where this process cannot start the workers itself."""
    if nproc <= 1:
        return
    if "WORLD_SIZE" in os.environ:
        raise BncheckError(f"{OPTION}: this process is already one of a torchrun job; give "
                           "torchrun's --nproc-per-node or bncheck's, not both")
    raise BncheckError(f"{OPTION} starts the workers from the command line: run it as "
                       "'bncheck ...' or 'python -m bncheck ...'")
