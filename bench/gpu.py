"""GPU rows (bench/gpu.sh): ResNet-50 at 224x224 over 1024 samples on one GPU.

Prints a Markdown table: compare / plain forward (healthy and mismatch), and recalibrate against
torch.optim.swa_utils.update_bn, as ratios within one run, medians of repeats. Needs CUDA.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.models import resnet50, trained_stats  # noqa: E402

WORK = ROOT / "bench" / "_work_gpu"
N, BS, REPEATS = 1024, 64, int(os.environ.get("BENCH_REPEATS", "3"))
PY = sys.executable


def wall(cmd: list[str]) -> float:
    """Seconds for one whole process."""
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if p.returncode not in (0, 1):
        raise SystemExit(f"gpu bench: {' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t


def pair(a: list[str], b: list[str]) -> tuple[float, float]:
    """Median wall times, interleaved."""
    ta, tb = [], []
    for _ in range(REPEATS):
        ta.append(wall(a))
        tb.append(wall(b))
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    """Build, measure, print."""
    if not torch.cuda.is_available():
        raise SystemExit("gpu bench: no CUDA device")
    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (N, 3, 224, 224)).astype(np.float32)
    np.save(WORK / "x.npy", x)
    np.save(WORK / "shifted.npy", x * 0.5 + 0.7)
    net = trained_stats(resnet50().cuda(), torch.from_numpy(x[:256]).cuda(), steps=4).cpu()
    torch.save(net, WORK / "r50.pt")
    base = [PY, str(ROOT / "bench" / "baselines.py")]
    rows = []
    for label, data in (("healthy", "x.npy"), ("mismatch", "shifted.npy")):
        cmp = [PY, "-m", "bncheck", "compare", str(WORK / "r50.pt"), "--allow-pickle", "--data",
               str(WORK / data), "--device", "cuda", "--batch-size", str(BS),
               "--train-batch-size", "32", "--format", "json"]
        plain = [*base, "torch-eval-cuda", str(WORK / "r50.pt"), str(WORK / data), str(BS)]
        a, b = pair(cmp, plain)
        target = "<= 3.5x" if label == "healthy" else "(information)"
        rows.append((f"compare --device cuda, ResNet-50 224x224, {N} samples, {label}",
                     f"plain forward: {b:.1f} s", f"{a:.1f} s", f"{a / b:.2f}x", target))
    recal = [PY, "-m", "bncheck", "rewrite", str(WORK / "r50.pt"), "--allow-pickle", "--mode",
             "recalibrate", "-o", str(WORK / "recal.pt"), "--data", str(WORK / "x.npy"),
             "--device", "cuda", "--batch-size", str(BS), "--train-batch-size", "32", "--force"]
    swa = [*base, "update-bn-cuda", str(WORK / "r50.pt"), str(WORK / "x.npy"), "32",
           str(WORK / "swa.pt")]
    a, b = pair(recal, swa)
    rows.append(("rewrite --mode recalibrate --device cuda", f"update_bn: {b:.1f} s", f"{a:.1f} s",
                 f"{a / b:.2f}x", "(information)"))
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; medians of {REPEATS}")
    print("| figure | baseline | bncheck | ratio | target |\n|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
