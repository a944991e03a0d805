"""rewrite --mode recalibrate against torch's update_bn: wall time, and the recalibrated
statistics' error against exact float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.common import BASE, BNCHECK, BS, TRAIN_BS, WORK, N, median_pair, row
from bncheck.core.passes.recalibration import shuffles
from bncheck.core.passes.reference import given_batch, plan_reference


def stats_errors(p: dict[str, Path]) -> tuple[float, float]:
    """Max relative error of recalibrated stats vs exact float64, bncheck and update_bn."""
    import copy

    from torch.optim.swa_utils import update_bn

    from bncheck.backends.base import load_model
    from bncheck.core.inputs.data import ImageOptions, open_samples
    from bncheck.core.passes.progress import NoProgress
    from bncheck.core.passes.runner import Runner
    from bncheck.rewriting.pipeline import layer_shapes, population_stats

    x = np.load(p["x"])
    model = load_model(p["r18"], allow_pickle=True)
    src = open_samples(p["x"], input_names=["input"], input_shapes=[], image=ImageOptions(), limit=None)
    ours = population_stats(model, Runner(src, NoProgress()), BS, TRAIN_BS,
                            layer_shapes(model, [x[:BS]]))[0]["stem.1"]
    net = model.module  # type: ignore[attr-defined]
    with torch.no_grad():
        conv = net.stem[0](torch.from_numpy(x)).double().numpy()
    flat = conv.transpose(1, 0, 2, 3).reshape(conv.shape[1], -1)
    mean, var = flat.mean(1), flat.var(1, ddof=1)

    def err(m: np.ndarray, v: np.ndarray) -> float:
        return max(float(np.abs(m - mean).max() / np.abs(mean).max()),
                   float(np.abs(v - var).max() / var.max()))

    swa = copy.deepcopy(net)
    update_bn([torch.from_numpy(x[s:s + BS]) for s in range(0, N, BS)], swa)
    bn = swa.stem[1]
    return (err(ours.mean, ours.var_unbiased),  # type: ignore[arg-type]
            err(bn.running_mean.double().numpy(), bn.running_var.double().numpy()))


def recalibrate_rows(p: dict[str, Path]) -> list[list[str]]:
    """The recalibrate rows."""
    rows: list[list[str]] = []
    out = WORK / "recal.pt"
    recal = [*BNCHECK, "rewrite", str(p["r18"]), "--allow-pickle", "--mode", "recalibrate", "-o",
             str(out), "--data", str(p["x"]), "--batch-size", str(BS), "--force"]
    # N samples make few batches, so bncheck gathers over several shuffles of them; the
    # baseline is given the same batches.
    count = len(shuffles(plan_reference(given_batch(TRAIN_BS), N)))
    base = [*BASE, "update-bn", str(p["r18"]), str(p["x"]), str(BS), str(WORK / "swa.pt")]
    base_recal = [*base, str(count)]
    a, b = median_pair(recal, base_recal)
    # compare's fix command gives the training batch size, which spares the estimating pass.
    given = [*recal, "--train-batch-size", str(TRAIN_BS)]
    a_given, b_given = median_pair(given, base_recal)
    a_once, b_once = median_pair(given, base)
    ours_err, swa_err = stats_errors(p)
    row(rows, f"`rewrite --mode recalibrate` wall time ({count} shuffles of {N} samples)",
        f"update_bn over the same batches + save: {b:.2f} s", f"{a:.2f} s", a / b, "<= 1.5x",
        a / b <= 1.5)
    row(rows, "`rewrite --mode recalibrate --train-batch-size`, as compare's fix command gives it "
        "(no estimating pass)", f"update_bn over the same batches + save: {b_given:.2f} s",
        f"{a_given:.2f} s", a_given / b_given, "(information)", None)
    row(rows, "the same, against update_bn over one pass (the shuffles' cost)",
        f"update_bn, one pass + save: {b_once:.2f} s", f"{a_once:.2f} s", a_once / b_once,
        "(information)", None)
    row(rows, "recalibrated stats, max rel. error vs exact float64 (first BN)",
        f"update_bn: {swa_err:.2e}", f"bncheck: {ours_err:.2e}", None, "lower than update_bn",
        ours_err < swa_err)
    return rows
