"""``bncheck.watch``: checks in a plain PyTorch training loop, from a hook on the model.

A step is one training-mode forward of the watched module. A check runs at the start of a step,
when the previous step's backward and optimizer update are done, on a private copy of the model.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from bncheck.core.network.options import DEFAULT_BATCH_SIZE
from bncheck.errors import BncheckError
from bncheck.integrations.heldout import held_out
from bncheck.integrations.subject import ApiSubject, device_of, private_copy, recalibrate_in_place
from bncheck.integrations.watcher import DEFAULT_BUDGET, DEFAULT_SAMPLES, Check, FailOn, Watcher


class TrainingStopped(BncheckError):
    """A check's verdict is one ``fail_on`` names: raised from the model's forward."""


class Watch:
    """Checks on ``module`` during training; see :func:`watch`."""

    def __init__(self, module: Any, data: Any, *, every: int | None = None,
                 samples: int = DEFAULT_SAMPLES, budget: float = DEFAULT_BUDGET,
                 fail_on: FailOn | str = FailOn.NEVER, train_batch_size: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, writer: Any = None) -> None:
        if not hasattr(module, "register_forward_pre_hook"):
            raise BncheckError(f"bncheck.watch takes a torch.nn.Module, not "
                               f"{type(module).__name__}")
        self.watcher = Watcher(every=every, budget=budget, fail_on=fail_on, unit="step")
        self.module = module
        self.data = data
        self.subject = ApiSubject(lambda: private_copy(module), held_out(data, samples),
                                  train_batch_size=train_batch_size, batch_size=batch_size,
                                  device=device_of(module))
        self.writer = writer
        self.steps = 0
        self._handle = module.register_forward_pre_hook(self._before_forward)

    @property
    def checks(self) -> list[Check]:
        """Every check so far, oldest first."""
        return self.watcher.checks

    def _before_forward(self, module: Any, args: tuple[Any, ...]) -> None:
        if not module.training:
            return  # validation and inference forwards are not steps
        if self.subject.train_batch_size is None and args and hasattr(args[0], "shape"):
            # The batch BatchNorm sees in training: what the reference must use.
            self.subject.train_batch_size = int(args[0].shape[0])
        if self.steps > 0:
            self._log(self.watcher.after_unit(self.subject, f"step {self.steps}"))
        self.steps += 1

    def check(self) -> Check:
        """Check now (at the end of training, say), whatever the interval."""
        result = self.watcher.check(self.subject, f"step {self.steps}")
        self._log(result)
        return result

    def recalibrate(self, data: Any = None) -> int:
        """Replace the watched module's running statistics, in place, with exact population
        statistics on ``data`` (the watch's data when None) at the training batch size; the
        count of buffers replaced. The one call here that changes the model, on purpose."""
        return recalibrate_in_place(self.module, self.data if data is None else data,
                                    self.subject.train_batch_size)

    def _log(self, result: Check | None) -> None:
        if result is None:
            return
        if self.writer is not None:
            for tag, value in result.metrics().items():
                self.writer.add_scalar(tag, value, self.steps)
        if self.watcher.should_stop:
            raise TrainingStopped(result.line())

    def close(self) -> None:
        """Stop watching: the hook is removed."""
        self._handle.remove()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def watch(module: Any, data: Any, *, every: int | None = None, samples: int = DEFAULT_SAMPLES,
          budget: float = DEFAULT_BUDGET, fail_on: FailOn | str = FailOn.NEVER,
          train_batch_size: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
          writer: Any = None) -> Watch:
    """Check ``module`` every ``every`` training steps (None: as often as ``budget``, 3% of the
    training time, allows) on the first ``samples`` samples of ``data``.

    Each check logs the eval-vs-train gap, its tolerance and the mismatch flag to ``writer`` (a
    TensorBoard ``SummaryWriter``), and a console line (logger ``bncheck``) when the verdict
    turns to mismatch. ``fail_on="mismatch"`` raises :class:`TrainingStopped` from the
    forward. Use as a context manager, or call ``close()``::

        with bncheck.watch(model, val_loader) as w:
            for x, y in train_loader:
                ...
        print(w.check().verdict)
    """
    return Watch(module, data, every=every, samples=samples, budget=budget, fail_on=fail_on,
                 train_batch_size=train_batch_size, batch_size=batch_size, writer=writer)
