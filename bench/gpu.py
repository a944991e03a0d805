"""GPU rows (bench/gpu.sh): ResNet-50 at 224x224 over 1024 samples on one GPU.

Prints a Markdown table: compare / plain forward (healthy and mismatch), and recalibrate against
torch.optim.swa_utils.update_bn, as ratios within one run, medians of repeats. Needs CUDA;
BENCH_DEVICE=cpu with a small BENCH_N is a dry run of the script itself.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import timed  # noqa: E402
from bench.models import resnet50, trained_stats  # noqa: E402

WORK = ROOT / "bench" / "_work_gpu"
N, BS = int(os.environ.get("BENCH_N", "1024")), 64
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
# The rows without a target run once: a device lease is short (the three rows at three repeats
# took over 10 minutes on an H100, most of it in the mismatch case).
INFO_REPEATS = 1
DEVICE = os.environ.get("BENCH_DEVICE", "cuda")
# baselines.py names its GPU programs with a -cuda suffix.
SUFFIX = "-cuda" if DEVICE == "cuda" else ""
PY = sys.executable


def pair(a: list[str], b: list[str], repeats: int = REPEATS) -> tuple[float, float, str]:
    """Median wall times, interleaved, and what the last run of `a` printed."""
    ta, tb, out = [], [], ""
    for _ in range(repeats):
        t, out = timed(a)
        ta.append(t)
        tb.append(timed(b)[0])
    return statistics.median(ta), statistics.median(tb), out


def verdict(out: str) -> str:
    """Verdict, recommendation and forward passes of a compare --format json run."""
    doc = json.loads(out)
    return (f"{doc['verdict']}, recommends {(doc['recommendation'] or {}).get('mode')}, "
            f"{doc['forward_passes']} passes")


def main() -> None:
    """Build, measure, print each row as it is measured."""
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu bench: no CUDA device")
    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (N, 3, 224, 224)).astype(np.float32)
    np.save(WORK / "x.npy", x)
    np.save(WORK / "shifted.npy", x * 0.5 + 0.7)
    net = trained_stats(resnet50().to(DEVICE), torch.from_numpy(x[:256]).to(DEVICE), steps=4)
    torch.save(net.cpu(), WORK / "r50.pt")
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "none (dry run on the CPU)"
    print(f"GPU: {name}; torch {torch.__version__}; {N} samples; healthy row: median of "
          f"{REPEATS}, other rows: {INFO_REPEATS} run")
    print("| figure | baseline | bncheck | ratio | target | verdict |\n|---|---|---|---|---|---|",
          flush=True)
    base = [PY, str(ROOT / "bench" / "baselines.py")]
    run = ["--device", DEVICE, "--batch-size", str(BS), "--train-batch-size", "32"]
    for label, data in (("healthy", "x.npy"), ("mismatch", "shifted.npy")):
        cmp = [PY, "-m", "bncheck", "compare", str(WORK / "r50.pt"), "--allow-pickle", "--data",
               str(WORK / data), *run, "--format", "json"]
        plain = [*base, "torch-eval" + SUFFIX, str(WORK / "r50.pt"), str(WORK / data), str(BS)]
        a, b, out = pair(cmp, plain, REPEATS if label == "healthy" else INFO_REPEATS)
        target = "<= 3.5x" if label == "healthy" else "(information)"
        print(f"| compare --device {DEVICE}, ResNet-50 224x224, {N} samples, {label} "
              f"| plain forward: {b:.1f} s | {a:.1f} s | {a / b:.2f}x | {target} "
              f"| {verdict(out)} |", flush=True)
    recal = [PY, "-m", "bncheck", "rewrite", str(WORK / "r50.pt"), "--allow-pickle", "--mode",
             "recalibrate", "-o", str(WORK / "recal.pt"), "--data", str(WORK / "x.npy"), *run,
             "--force"]
    swa = [*base, "update-bn" + SUFFIX, str(WORK / "r50.pt"), str(WORK / "x.npy"), "32",
           str(WORK / "swa.pt")]
    a, b, _ = pair(recal, swa, INFO_REPEATS)
    print(f"| rewrite --mode recalibrate --device {DEVICE} | update_bn: {b:.1f} s | {a:.1f} s "
          f"| {a / b:.2f}x | (information) | written |", flush=True)


if __name__ == "__main__":
    main()
