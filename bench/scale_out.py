"""compare under torchrun: two processes of one thread against one."""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import BNCHECK, BS, PY, REPEATS50, TRAIN_BS, N, median_pair, row


def scale_out_rows(p: dict[str, Path]) -> list[list[str]]:
    """The scale-out row."""
    rows: list[list[str]] = []
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmp1 = [*BNCHECK, "compare", str(p["r18"]), "--allow-pickle", "--data", str(p["x4"]),
            "--batch-size", str(BS), "--train-batch-size", str(TRAIN_BS), "--format", "json"]
    cmp2 = [PY, "-m", "torch.distributed.run", "--nproc-per-node", "2", *cmp1[1:]]
    t1, t2 = median_pair(cmp1, cmp2, REPEATS50, env=one_thread)
    eff = t1 / t2 / 2
    row(rows, f"`compare` throughput, torchrun 2 processes x 1 thread vs 1 x 1 ({4 * N} samples, "
        "ResNet-18 layout)", f"1 process: {t1:.2f} s", f"2 processes: {t2:.2f} s", t1 / t2,
        f"efficiency {100 * eff:.0f}% (information)", None)
    return rows
