"""The latency of what rewrite writes: fold, instance-norm and batch-stats ONNX files against the
original, in onnxruntime at batch 8."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from bench.common import BNCHECK, FOLD_SLACK, LATENCY_BLOCK, REPEATS, ROOT, WORK, row


def ort_latency(paths: dict[str, Path]) -> dict[str, float]:
    """Median batch-8 latency (ms) per model, in blocks of runs interleaved across models.

    Blocks, not single runs: after each run a session's worker threads spin for a while,
    waiting for more work. Interleaved run by run, each of four sessions ran against the
    spinning threads of the one before it (35 ms a run on this 2-core machine, against 11 ms
    alone). The first run of each block, which still meets them, is not counted.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sessions = {k: ort.InferenceSession(str(v), opts, providers=["CPUExecutionProvider"])
                for k, v in paths.items()}
    x = np.load(WORK / "x.npy")[:8]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(10):
            s.run(None, {"input": x})
    for _ in range(max(REPEATS, 5) * 3):
        for k, s in sessions.items():
            s.run(None, {"input": x})
            for _ in range(LATENCY_BLOCK):
                t = time.perf_counter()
                s.run(None, {"input": x})
                times[k].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def optimized_nodes(path: Path) -> int:
    """How many nodes onnxruntime runs for ``path`` after its graph optimizations (Conv+BN
    fusion, NCHWc layouts): what a rewrite left behind shows here, not in the file."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(WORK / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return len(onnx.load(opts.optimized_model_filepath).graph.node)


def latency_rows(p: dict[str, Path]) -> list[list[str]]:
    """The rewrite latency rows."""
    rows: list[list[str]] = []
    rewritten = {"original": p["r18_onnx"]}
    for mode in ("fold", "instance-norm", "batch-stats"):
        dst = WORK / f"r18-{mode}.onnx"
        subprocess.run([*BNCHECK, "rewrite", str(p["r18_onnx"]), "--mode", mode, "-o", str(dst),
                        "--data", str(p["x"]), "--force"], cwd=ROOT, check=True, capture_output=True)
        rewritten[mode] = dst
    lat = ort_latency(rewritten)
    nodes = {k: optimized_nodes(v) for k, v in rewritten.items()}
    for mode, target in (("fold", 1.0), ("instance-norm", 1.15), ("batch-stats", 1.35)):
        r = lat[mode] / lat["original"]
        row(rows, f"onnxruntime latency, batch 8, {mode} (nodes after onnxruntime's "
            f"optimization: {nodes[mode]}, original {nodes['original']})",
            f"original: {lat['original']:.2f} ms", f"{lat[mode]:.2f} ms", r, f"<= {target:.2f}x",
            r <= target + FOLD_SLACK * (mode == "fold"))
    return rows
