"""The taps overhead row, measured in a fresh process: the same forward passes with and without
taps, in interleaved pairs (alternating which goes first), as JSON on stdout.

A process of its own, so that the bench's own set-up (training, ONNX export) cannot colour it:
after that set-up, one 31-pair run in process read 1.15x, against 1.01x and 1.03x in fresh
processes the same hour. Pairs, because the run-to-run spread here is larger than the overhead.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bncheck.backends.base import load_model
from bncheck.core.stats.taps import TapCollector


def main(model_path: str, data: str, batch_size: str, pairs: str) -> None:
    """Print the median plain and tapped pass times and the median of the per-pair ratios."""
    torch.set_num_threads(2)
    model = load_model(Path(model_path), allow_pickle=True)
    x = np.load(data)
    names = [layer.name for layer in model.layers()]
    bs = int(batch_size)

    def run(tapped: bool) -> float:
        taps = TapCollector()
        t = time.perf_counter()
        for s in range(0, len(x), bs):
            model.run([x[s:s + bs]], names if tapped else (), taps if tapped else None)
        return time.perf_counter() - t

    run(False)
    run(True)
    plain, tapped = [], []
    for i in range(int(pairs)):
        first, second = (True, False) if i % 2 else (False, True)
        a, b = run(first), run(second)
        tapped.append(a if first else b)
        plain.append(b if first else a)
    print(json.dumps({"plain": statistics.median(plain), "tapped": statistics.median(tapped),
                      "ratio": statistics.median(t / p for t, p in zip(tapped, plain, strict=True))}))


if __name__ == "__main__":
    main(*sys.argv[1:])
