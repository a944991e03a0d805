"""``--nproc-per-node N``: start N bncheck processes on this machine and answer for them.

torchrun turns any non-zero exit of a worker (every mismatch, every clean refusal) into its own
``ChildFailedError`` traceback and exit 1. This launch uses the same elastic agent through its
API, but keeps the workers' exit codes: rank 0's code when rank 0 finished (0, 1 or 2), else
the first process that failed, in one sentence. Rank 0 writes to this terminal as a single
process would; the other ranks' output goes to a temporary log. Each rank records its error
sentence in the launch folder, so a sentence that only one rank met is printed once.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from bncheck.core.distributed.launch_records import (
    LAUNCH_DIR_ENV,
    interrupted,
    recorded_errors,
    recorded_writes,
)


@dataclass(frozen=True)
class LaunchOutcome:
    """The job's exit code, and the sentences to print for it that no rank printed."""

    code: int
    messages: tuple[str, ...] = ()


def launch(args: list[str], nproc: int) -> LaunchOutcome:
    """Run ``python -m bncheck ARGS`` as ``nproc`` processes of one job on this machine."""
    from torch.distributed.elastic.multiprocessing.api import (
        DefaultLogsSpecs,
        SignalException,
        Std,
    )
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent logs every start, signal and failure, with tracebacks; the outcome says it all.
    # Its modules set their loggers' own levels when imported, so each is quieted by name.
    for name in [*logging.root.manager.loggerDict, "torch.distributed"]:
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # As torchrun does: one thread per worker, so figures match a one-thread process.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    log_dir = tempfile.mkdtemp(prefix="bncheck-launch-")
    os.environ[LAUNCH_DIR_ENV] = log_dir
    try:
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
            rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
            monitor_interval=0.1,
            logs_specs=DefaultLogsSpecs(log_dir=log_dir,
                                        redirects={r: Std.ALL for r in range(1, nproc)}))
        try:
            elastic_launch(config, sys.executable)("-m", "bncheck", *args)
        except SignalException as e:
            # Ctrl-C or a kill of this launcher: the agent has stopped every worker.
            name = signal.Signals(e.sigval).name
            return LaunchOutcome(128 + int(e.sigval),
                                 (interrupted(name, recorded_writes(Path(log_dir))),))
        except ChildFailedError as e:
            failures = e.failures
            order = sorted(failures, key=lambda r: (failures[r].timestamp, r))
            return _outcome({r: failures[r].exitcode for r in order},
                            recorded_errors(Path(log_dir)), nproc)
        return LaunchOutcome(0)
    finally:
        del os.environ[LAUNCH_DIR_ENV]
        shutil.rmtree(log_dir, ignore_errors=True)


def _outcome(codes: dict[int, int], errors: dict[int, str], nproc: int) -> LaunchOutcome:
    """The job's answer from the ranks that failed (exit codes by rank, the first to fail
    first) and the sentences the ranks recorded.

    Ranks other than 0 exit 0 on bncheck's own outcomes (``worker_exit``), so the agent never
    stops rank 0 on their account: a failure there is a crash.
    """
    rank0_done = codes.get(0, 0) > 0  # rank 0 ended by itself with a verdict or a refusal
    # When rank 0 ends non-zero the agent stops the others with SIGTERM: that is no crash.
    crashes = [r for r, c in codes.items()
               if r != 0 and c != 0 and not (rank0_done and c == -int(signal.SIGTERM))]
    lost = [_lost(crashes[0], codes[crashes[0]], nproc)] if crashes else []
    # A sentence a rank met alone (rank 0 then only saw it stop answering).
    alone = [text for r, text in sorted(errors.items()) if r != 0 and text != errors.get(0)][:1]
    if rank0_done:
        # Rank 0 printed why.
        return LaunchOutcome(codes[0], tuple(alone + lost))
    if 0 in errors or alone:
        # Rank 0 printed its sentence before it was stopped, or another rank met one alone.
        return LaunchOutcome(2, tuple(alone + lost))
    # The agent stops every other process with SIGTERM once one fails, and under load its
    # timestamps can put such a stop first: the culprit is the failure that is no SIGTERM.
    stopped = -int(signal.SIGTERM)
    first = next((r for r, c in codes.items() if c != stopped), next(iter(codes)))
    return LaunchOutcome(2, (_lost(first, codes[first], nproc),))


def _lost(rank: int, code: int, nproc: int) -> str:
    how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and _is_signal(-code)
           else f"exited with code {code}")
    return (f"process {rank} of {nproc} {how} before the job finished, so every process "
            "stopped and nothing was written")


def _is_signal(number: int) -> bool:
    try:
        signal.Signals(number)
    except ValueError:
        return False
    return True

