"""compare's cost against plain inference: torch and ONNX, small and large sample counts, the
taps' overhead, the per-sample slope and peak memory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.common import (
    BASE,
    BNCHECK,
    BS,
    BS50,
    N50,
    ORT_RUNS,
    PY,
    ROOT,
    TAP_PAIRS,
    TRAIN_BS,
    WIDE,
    N,
    median_of,
    median_pair,
    on_data,
    peak_rss_mb,
    printed,
    row,
    timed,
    wall,
)


def taps_overhead(p: dict[str, Path]) -> dict[str, float]:
    """Same forward passes with and without taps (bench/taps.py, in a fresh process)."""
    out = subprocess.run([PY, str(ROOT / "bench" / "taps.py"), str(p["r18"]), str(p["x"]), str(BS),
                          str(TAP_PAIRS)], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def compare_rows(p: dict[str, Path]) -> list[list[str]]:
    """The compare rows."""
    rows: list[list[str]] = []
    cmp_torch = [*BNCHECK, "compare", str(p["r18"]), "--allow-pickle", "--data", str(p["x"]),
                 "--batch-size", str(BS), "--train-batch-size", str(TRAIN_BS), "--format", "json"]
    base_torch = [*BASE, "torch-eval", str(p["r18"]), str(p["x"]), str(BS)]
    a, b = median_pair(cmp_torch, base_torch)
    row(rows, "`compare` wall time, torch (ResNet-18 layout, 20 BN, 256x3x32x32, healthy)",
        f"plain eval forward, whole process: {b:.2f} s", f"{a:.2f} s", a / b, "<= 2.5x", a / b <= 2.5)
    cmp50 = [*BNCHECK, "compare", str(p["r50_live"]), "--allow-pickle", "--data", str(p["x224"]),
             "--batch-size", str(BS50), "--train-batch-size", str(BS50), "--format", "json"]
    base50 = [*BASE, "torch-eval", str(p["r50_live"]), str(p["x224"]), str(BS50)]
    b50 = wall(base50)
    a50, out50 = timed(cmp50)
    doc50 = json.loads(out50)
    row(rows, f"`compare` wall time, torch (ResNet-50 layout, 53 BN, {N50}x3x224x224; "
        f"{doc50['verdict']}, {doc50['forward_passes']} passes; one run)",
        f"plain eval forward, whole process: {b50:.2f} s", f"{a50:.2f} s", a50 / b50,
        "(information)", None)
    passes = json.loads(timed(cmp_torch)[1])["forward_passes"]
    shifted = on_data(cmp_torch, p["x"], p["shifted"])
    doc = json.loads(timed(shifted)[1])
    a2 = median_of(lambda: wall(shifted))
    row(rows, f"`compare`, torch, shifted inputs ({doc['verdict']}: candidates run, "
        f"{doc['forward_passes']} passes)", f"plain eval forward: {b:.2f} s", f"{a2:.2f} s", a2 / b,
        "(information)", None)
    taps = taps_overhead(p)
    row(rows, f"taps overhead (same passes with vs without; compare makes {passes} passes; "
        f"median of {TAP_PAIRS} interleaved pairs)", f"no taps: {taps['plain']:.2f} s",
        f"taps: {taps['tapped']:.2f} s", taps["ratio"], "<= 1.15x", taps["ratio"] <= 1.15)
    cmp_onnx = [*BNCHECK, "compare", str(p["r18_onnx"]), "--data", str(p["x"]), "--batch-size", str(BS),
                "--train-batch-size", str(TRAIN_BS), "--format", "json"]
    base_onnx = [*BASE, "ort-eval", str(p["r18_onnx"]), str(p["x"]), str(BS)]
    a, b = median_pair(cmp_onnx, base_onnx)
    row(rows, f"`compare` wall time, ONNX, {N} samples", f"plain onnxruntime inference: {b:.2f} s",
        f"{a:.2f} s", a / b, "<= 3.3x (issue 24)", a / b <= 3.3)
    runs = median_pair([*ORT_RUNS, "compare", str(p["r18_onnx"]), str(p["x"]), str(BS), str(TRAIN_BS)],
                       [*ORT_RUNS, "plain", str(p["r18_onnx"]), str(p["x"]), str(BS)], measure=printed)
    row(rows, "time inside onnxruntime's `run` calls alone, same `compare` (start-up left out)",
        f"plain inference's calls: {runs[1]:.2f} s", f"{runs[0]:.2f} s",
        runs[0] / runs[1], "(information)", None)
    cmp_wide = on_data(cmp_onnx, p["r18_onnx"], p["r18_wide_onnx"])
    aw, bw = median_pair(cmp_wide, on_data(base_onnx, p["r18_onnx"], p["r18_wide_onnx"]))
    row(rows, f"`compare` wall time, ONNX, ResNet-18's own widths ({WIDE} to {8 * WIDE} channels: 4x "
        "the convolution work per sample)", f"plain onnxruntime inference: {bw:.2f} s",
        f"{aw:.2f} s", aw / bw, "(information)", None)
    cmp_onnx4 = on_data(cmp_onnx, p["x"], p["x4"])
    a4, b4 = median_pair(cmp_onnx4, on_data(base_onnx, p["x"], p["x4"]))
    row(rows, f"`compare` wall time, ONNX, {4 * N} samples (start-up spread over 4x the batches)",
        f"plain onnxruntime inference: {b4:.2f} s", f"{a4:.2f} s", a4 / b4, "(information)", None)
    a16, b16 = median_pair(on_data(cmp_onnx, p["x"], p["x16"]),
                           on_data(base_onnx, p["x"], p["x16"]))
    tapped16 = json.loads(timed(on_data(cmp_onnx, p["x"], p["x16"]))[1])["samples"]["tapped"]
    row(rows, f"`compare` wall time, ONNX, {16 * N} samples, healthy (taps converged on "
        f"{tapped16['eval']} and {tapped16['reference']} samples)",
        f"plain onnxruntime inference: {b16:.2f} s", f"{a16:.2f} s", a16 / b16,
        "<= 2.4x (issue 24)", a16 / b16 <= 2.4)
    cmp_torch16 = on_data(cmp_torch, p["x"], p["x16"])
    at16, bt16 = median_pair(cmp_torch16, on_data(base_torch, p["x"], p["x16"]))
    row(rows, f"`compare` wall time, torch, {16 * N} samples, healthy",
        f"plain eval forward, whole process: {bt16:.2f} s", f"{at16:.2f} s", at16 / bt16,
        "<= 2.3x (issue 24)", at16 / bt16 <= 2.3)
    # The slope: what each sample past 1024 adds, in plain passes of it. compare tends to this
    # as the data grows (start-up and fixed costs drop out).
    slope = (a16 - a4) / (b16 - b4)
    row(rows, f"`compare`, ONNX: extra time per extra sample from {4 * N} to {16 * N} samples, in "
        "plain passes", f"plain: {1000 * (b16 - b4) / (12 * N):.2f} ms a sample",
        f"{1000 * (a16 - a4) / (12 * N):.2f} ms a sample", slope, "<= 2.2x (issue 24)",
        slope <= 2.2)
    m1 = peak_rss_mb(cmp_onnx)
    m4 = peak_rss_mb(cmp_onnx4)
    row(rows, "peak memory of `compare` (ONNX) at 4x the samples", f"1x: {m1:.0f} MiB",
        f"4x: {m4:.0f} MiB", m4 / m1, "<= 1.10x", m4 / m1 <= 1.10)
    return rows
