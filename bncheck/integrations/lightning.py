"""``BNCheckCallback`` for PyTorch Lightning (``pip install 'bncheck[lightning]'``)."""

from __future__ import annotations

from typing import Any

from bncheck.errors import BncheckError
from bncheck.extras import requires

with requires("bncheck.integrations.lightning", "lightning"):
    import lightning.pytorch as pl

from bncheck.core.network.options import DEFAULT_BATCH_SIZE
from bncheck.integrations.heldout import held_out
from bncheck.integrations.subject import (
    ApiSubject,
    device_of,
    private_copy,
    recalibrate_in_place,
)
from bncheck.integrations.watcher import DEFAULT_BUDGET, DEFAULT_SAMPLES, Check, FailOn, Watcher


class BNCheckCallback(pl.Callback):
    """Check the LightningModule's BatchNorm layers while it trains.

    At the end of every ``every_n_epochs`` epochs (or ``every_n_steps`` steps; neither: as often
    as ``budget``, 3% of the training time, allows) on the first ``samples`` samples of ``data``
    (what the module's ``forward`` takes, as an array, tensor, Dataset or DataLoader): logs
    ``bncheck/eval_gap``, ``bncheck/tolerance`` and ``bncheck/mismatch`` with ``self.log`` (so
    TensorBoard and every other logger get them), and a console line when the verdict turns to
    mismatch, with the fix. ``fail_on="mismatch"`` stops training; ``recalibrate_at_end=True``
    replaces the running statistics with exact ones on ``data`` at the end of the last epoch,
    before ModelCheckpoint saves it::

        trainer = L.Trainer(callbacks=[BNCheckCallback(val_loader, fail_on="mismatch")])
    """

    def __init__(self, data: Any, *, every_n_epochs: int | None = None,
                 every_n_steps: int | None = None, samples: int = DEFAULT_SAMPLES,
                 budget: float = DEFAULT_BUDGET, fail_on: FailOn | str = FailOn.NEVER,
                 recalibrate_at_end: bool = False, train_batch_size: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if every_n_epochs is not None and every_n_steps is not None:
            raise BncheckError("give every_n_epochs or every_n_steps, not both")
        self.by_step = every_n_steps is not None
        self.watcher = Watcher(every=every_n_steps if self.by_step else every_n_epochs,
                               budget=budget, fail_on=fail_on,
                               unit="step" if self.by_step else "epoch")
        self.data = data
        self.held = held_out(data, samples)
        self.recalibrate_at_end = recalibrate_at_end
        self.train_batch_size = train_batch_size
        self.batch_size = batch_size
        self.subject: ApiSubject | None = None
        self.recalibrated = False

    @property
    def checks(self) -> list[Check]:
        """Every check so far, oldest first."""
        return self.watcher.checks

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Refuse what a check cannot do before any training."""
        if trainer.world_size > 1:
            raise BncheckError("BNCheckCallback runs in a single process; under DDP, check the "
                               "saved checkpoint with bncheck compare (or torchrun bncheck)")
        self.subject = ApiSubject(lambda: private_copy(pl_module, (pl_module._trainer,)),
                                  self.held, train_batch_size=self.train_batch_size,
                                  batch_size=self.batch_size, device=device_of(pl_module))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The training clock starts."""
        self.watcher.start()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        """The training batch size, from the first batch: the one BatchNorm saw."""
        assert self.subject is not None
        if self.subject.train_batch_size is None:
            first: Any = batch[0] if isinstance(batch, (tuple, list)) else \
                batch.get("input") if isinstance(batch, dict) else batch
            if first is not None and hasattr(first, "shape"):
                self.subject.train_batch_size = int(first.shape[0])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        """A check, when one is due by steps."""
        if self.by_step:
            self._after(trainer, pl_module, f"step {trainer.global_step}")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validation after the last training batch of the last epoch sees, and ModelCheckpoint
        saves, the recalibrated statistics."""
        if not trainer.sanity_checking and self._last_epoch(trainer) and \
                trainer.fit_loop.epoch_loop.done:
            self._recalibrate(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A check, when one is due by epochs; the recalibration at the last epoch."""
        if not self.by_step:
            self._after(trainer, pl_module, f"epoch {trainer.current_epoch}")
        if self._last_epoch(trainer):
            self._recalibrate(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A last check, if none ran or training moved on since (within the interval)."""
        assert self.subject is not None
        result = self.watcher.at_end(self.subject, "end of training")
        if result is not None:
            # self.log is closed here: the loggers get the figures directly.
            for logger in trainer.loggers:
                logger.log_metrics(result.metrics(), step=trainer.global_step)

    def _after(self, trainer: pl.Trainer, pl_module: pl.LightningModule, at: str) -> None:
        assert self.subject is not None
        result = self.watcher.after_unit(self.subject, at)
        if result is None:
            return
        pl_module.log_dict(result.metrics(), on_step=self.by_step, on_epoch=not self.by_step)
        if self.watcher.should_stop:
            trainer.should_stop = True

    def _last_epoch(self, trainer: pl.Trainer) -> bool:
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        return bool(last or trainer.should_stop)

    def _recalibrate(self, pl_module: pl.LightningModule) -> None:
        if not self.recalibrate_at_end or self.recalibrated:
            return
        assert self.subject is not None
        recalibrate_in_place(pl_module, self.data, self.subject.train_batch_size,
                             (pl_module._trainer,))
        self.recalibrated = True
