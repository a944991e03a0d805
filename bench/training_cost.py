"""What checking during training costs: the batch-size-1 U-Net fixture trained with and without
``bncheck.watch``, the Lightning callback and the Keras callback at their default interval (the
3% time budget).

Each pair is trained in this process, alternately, from the same seed; the figure is the median
ratio of wall times over TRAINING_REPEATS pairs, and the check count of the watched run.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import row
from fixtures.archs import PixNet
from fixtures.make_fixtures import pix_pairs

# Pairs of runs, each 20 to 40 s: long enough for the budget to allow a check or two.
TRAINING_REPEATS = 3
STEPS = 10000
EPOCHS, EPOCH_STEPS = 50, 100
# Keras steps cost more than torch's here, and its check more (2.4 s): 40 epochs (78 s) are
# what the 5% ceiling needs for the end-of-training check to run.
KERAS_EPOCHS = 40


def training_rows(only: Sequence[str] = ()) -> list[list[str]]:
    """The training-cost rows (those whose name contains one of ``only``, when given)."""
    logging.getLogger("bncheck").setLevel(logging.ERROR)  # the mismatch line, once per run
    rows: list[list[str]] = []
    for name, run in RUNS:
        if only and not any(o in name for o in only):
            continue
        ratios, without, checks = [], [], []
        for _ in range(TRAINING_REPEATS):
            b, _ = run(False)
            a, n = run(True)
            ratios.append(a / b)
            without.append(b)
            checks.append(n)
        r = statistics.median(ratios)
        row(rows, f"training the pix2pix U-Net at batch size 1 ({name}, default interval)",
            f"without: {statistics.median(without):.1f} s", f"{statistics.median(checks):.0f} "
            f"check(s), {r:.3f}x", r, "<= 1.05x", r <= 1.05)
    return rows


def _plain(watched: bool) -> tuple[float, int]:
    import bncheck

    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in pix_pairs(STEPS, np.random.default_rng(1)))
    held, _ = pix_pairs(128, np.random.default_rng(99))
    model = PixNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    w = bncheck.watch(model, held) if watched else None
    t = time.perf_counter()
    for s in range(STEPS):
        loss = nn.functional.l1_loss(model(x[s:s + 1]), y[s:s + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t
    if w is None:
        return seconds, 0
    w.close()
    return seconds, len(w.checks)


def _lightning(watched: bool) -> tuple[float, int]:
    from tests.support import tv_shim

    tv_shim.install()
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from bncheck.integrations.lightning import BNCheckCallback

    class Pix(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = PixNet()

        def forward(self, x: torch.Tensor) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, _: int) -> Any:
            return nn.functional.l1_loss(self(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=2e-3)

    pl.seed_everything(0, verbose=False)
    x, y = (torch.from_numpy(a) for a in pix_pairs(EPOCH_STEPS, np.random.default_rng(1)))
    held, _ = pix_pairs(128, np.random.default_rng(99))
    cb = BNCheckCallback(held) if watched else None
    trainer = pl.Trainer(max_epochs=EPOCHS, callbacks=[] if cb is None else [cb], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    t = time.perf_counter()
    trainer.fit(Pix(), DataLoader(TensorDataset(x, y), batch_size=1))
    return time.perf_counter() - t, 0 if cb is None else len(cb.checks)


def _keras(watched: bool) -> tuple[float, int]:
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")  # bncheck checks Keras on torch in process
    import keras

    from bncheck.integrations.keras import BNCheckCallback
    from fixtures.keras_archs import unet

    keras.utils.set_random_seed(0)
    x, y = (np.ascontiguousarray(a.transpose(0, 2, 3, 1))
            for a in pix_pairs(EPOCH_STEPS, np.random.default_rng(1)))
    held, _ = pix_pairs(128, np.random.default_rng(99))
    cb = BNCheckCallback(held.transpose(0, 2, 3, 1), train_batch_size=1) if watched else None
    model = unet()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mae")
    t = time.perf_counter()
    model.fit(x, y, batch_size=1, epochs=KERAS_EPOCHS, verbose=0,
              callbacks=[] if cb is None else [cb])
    return time.perf_counter() - t, 0 if cb is None else len(cb.checks)


RUNS: tuple[tuple[str, Callable[[bool], tuple[float, int]]], ...] = (
    ("plain torch, `bncheck.watch`", _plain),
    ("PyTorch Lightning, `BNCheckCallback`", _lightning),
    ("Keras on torch, `BNCheckCallback`", _keras))
