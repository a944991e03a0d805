"""What every bench family shares: paths, sizes, and one way to time and report a row.

Every figure is a ratio against a baseline measured in the same run, as the median of repeats
(``median_pair`` interleaves the two commands so drift hits both alike).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work"
PY = sys.executable
BNCHECK = [PY, "-m", "bncheck"]
BASE = [PY, str(ROOT / "bench" / "baselines.py")]
ORT_RUNS = [PY, str(ROOT / "bench" / "ort_runs.py")]
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
N, BS, TRAIN_BS = 256, 32, 32
# The ResNet-50 layout at 224x224: fewer samples and repeats (a pass takes seconds on 2 CPUs).
N50, BS50, REPEATS50 = 16, 16, 1
# The ResNet-18 layout's width for the torch rows is half that of ResNet-18 itself; one ONNX row
# runs the real width.
WIDE = 64
# fold runs the kernels the original already ran (onnxruntime fuses BN into Conv): its target of
# 1.00x is read with this much run-to-run spread allowed.
FOLD_SLACK = 0.02
# The taps overhead is smaller than the run-to-run spread of one pass here: many pairs.
TAP_PAIRS = 21
# Runs of one session in a row, in the latency rows (ort_latency).
LATENCY_BLOCK = 20


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Seconds for one whole process, and what it printed (exit 1 is a verdict, not a failure)."""
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if p.returncode not in (0, 1):
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t, p.stdout


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds for one whole process."""
    return timed(cmd, env)[0]


def printed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """The number one process prints."""
    return float(timed(cmd, env)[1])


def median_pair(a: list[str], b: list[str], repeats: int = REPEATS,
                env: dict[str, str] | None = None,
                measure: Callable[[list[str], dict[str, str] | None], float] = wall
                ) -> tuple[float, float]:
    """Median ``measure`` (wall time by default) of two commands, interleaved so drift hits both
    alike."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(measure(a, env))
        tb.append(measure(b, env))
    return statistics.median(ta), statistics.median(tb)


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory of a child process (MiB)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([PY, "-c", probe, *cmd], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def on_data(cmd: list[str], old: Path, new: Path) -> list[str]:
    """``cmd`` with the file ``old`` (its data or its model) replaced by ``new``."""
    return [str(new) if arg == str(old) else arg for arg in cmd]


def median_of(fn: Callable[[], float]) -> float:
    """Median of REPEATS calls."""
    return statistics.median(fn() for _ in range(REPEATS))


def row(rows: list[list[str]], figure: str, baseline: str, measured: str, ratio: float | None,
        target: str, ok: bool | None) -> None:
    """Append one table row and echo it (``ok`` None: a row for information, no target)."""
    met = "-" if ok is None else "yes" if ok else "**no**"
    r = [figure, baseline, measured, "-" if ratio is None else f"{ratio:.2f}x", target, met]
    rows.append(r)
    print(" | ".join(r), flush=True)
