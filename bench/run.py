"""make bench: bncheck against its baselines, as ratios within one run, medians of repeats.

Writes bench/RESULTS.md. Each family of figures has its module (compare_cost, recalibrate_cost,
rewrite_latency, scale_out, startup, training_cost), all timed by bench/common.py; the models and data are
built by bench/workload.py in bench/_work (ignored by git).
"""

from __future__ import annotations

import compileall
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPEATS, ROOT
from bench.compare_cost import compare_rows
from bench.recalibrate_cost import recalibrate_rows
from bench.rewrite_latency import latency_rows
from bench.scale_out import scale_out_rows
from bench.startup import startup_rows
from bench.training_cost import training_rows
from bench.workload import build


def main() -> None:
    """Measure every row and write RESULTS.md."""
    torch.set_num_threads(2)
    # An installed bncheck runs from bytecode (pip compiles it). Under PYTHONDONTWRITEBYTECODE,
    # which this machine sets, every process would compile every module first (0.04 s here).
    compileall.compile_dir(ROOT / "bncheck", quiet=1)
    p = build()
    rows = [*compare_rows(p), *recalibrate_rows(p), *latency_rows(p), *scale_out_rows(p),
            *startup_rows(p), *training_rows()]
    write(rows)


def write(rows: list[list[str]]) -> None:
    """RESULTS.md with the machine it ran on."""
    import onnxruntime

    head = ["figure", "baseline", "bncheck", "ratio", "target", "met"]
    lines = [
        "# bncheck benchmarks",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}. Medians of {REPEATS} runs; ratios are within one run. "
        "Wall times are whole processes (start-up and imports included). Regenerate with `make bench`.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        # What the figures mean and what was tried: prose, kept beside the code that measures.
        "",
        (ROOT / "bench" / "notes.md").read_text(),
        # Measured on a GPU machine by bench/gpu.sh, not here: kept as its own file.
        (ROOT / "bench" / "gpu_results.md").read_text(),
    ]
    (ROOT / "bench" / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'bench' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
