"""``BNCheckCallback`` for Keras 3 (``pip install 'bncheck[keras]'``), on any Keras backend.

On Keras' torch backend a check reads the live model in this process, as ``bncheck.compare``
does. On the others (TensorFlow, JAX) bncheck cannot run the model here, so each check saves it
to a temporary ``.keras`` file and runs ``bncheck compare`` on that in a child process; the
time budget accounts for the child's start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bncheck.errors import BncheckError
from bncheck.extras import requires

with requires("bncheck.integrations.keras", "keras"):
    import keras

from bncheck import api
from bncheck.backends.keras.graph import batch_norms
from bncheck.core.network.options import DEFAULT_BATCH_SIZE
from bncheck.integrations.heldout import held_out
from bncheck.integrations.rng import preserved_rng
from bncheck.integrations.subject import ApiSubject
from bncheck.integrations.watcher import DEFAULT_BUDGET, DEFAULT_SAMPLES, Check, FailOn, Watcher


class BNCheckCallback(keras.callbacks.Callback):
    """Check the model's BatchNormalization layers while ``fit`` runs.

    At the end of every ``every_n_epochs`` epochs (None: as often as ``budget``, 3% of the
    training time, allows) on the first ``samples`` samples of ``data`` (what the model takes,
    channels-last as it is): adds ``bncheck/eval_gap``, ``bncheck/tolerance`` and
    ``bncheck/mismatch`` to the epoch's ``logs`` (History and TensorBoard listed after it get
    them), and a console line when the verdict turns to mismatch, with the fix.
    ``fail_on="mismatch"`` sets ``model.stop_training``; ``recalibrate_at_end=True`` replaces
    the moving statistics with exact ones on ``data`` at the end of the last epoch (list it
    before ModelCheckpoint, which then saves them). Keras does not say its batch size:
    give ``train_batch_size``, or bncheck estimates it from the statistics::

        model.fit(x, y, batch_size=1, callbacks=[BNCheckCallback(x_val, train_batch_size=1)])
    """

    def __init__(self, data: Any, *, every_n_epochs: int | None = None,
                 samples: int = DEFAULT_SAMPLES, budget: float = DEFAULT_BUDGET,
                 fail_on: FailOn | str = FailOn.NEVER, recalibrate_at_end: bool = False,
                 train_batch_size: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__()
        self.watcher = Watcher(every=every_n_epochs, budget=budget, fail_on=fail_on)
        self.held = held_out(data, samples)
        self.recalibrate_at_end = recalibrate_at_end
        self.train_batch_size = train_batch_size
        self.batch_size = batch_size
        self.subject: KerasApiSubject | ChildSubject | None = None

    @property
    def checks(self) -> list[Check]:
        """Every check so far, oldest first."""
        return self.watcher.checks

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """The training clock starts; the way checks run is chosen for the backend."""
        if keras.backend.backend() == "torch":
            model = self.model
            self.subject = KerasApiSubject(lambda: model, self.held,
                                      train_batch_size=self.train_batch_size,
                                      batch_size=self.batch_size)
        else:
            self.subject = ChildSubject(self.model, self.held, self.train_batch_size,
                                        self.batch_size)
        self.watcher.start()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """A check, when one is due; the recalibration at the last epoch."""
        assert self.subject is not None
        result = self.watcher.after_unit(self.subject, f"epoch {epoch}")
        if result is not None:
            if logs is not None:
                logs.update(result.metrics())
            if self.watcher.should_stop:
                self.model.stop_training = True
        if self.recalibrate_at_end and (epoch + 1 >= self.params.get("epochs", 0)
                                        or self.model.stop_training):
            self._recalibrate()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """A last check, if none ran or training moved on since (within the interval)."""
        assert self.subject is not None
        self.watcher.at_end(self.subject, "end of training")

    def _recalibrate(self) -> None:
        assert self.subject is not None
        with preserved_rng():
            stats = self.subject.recalibrated()
        for layer in batch_norms(self.model):
            if layer.name in stats:
                mean, var = stats[layer.name]
                layer.moving_mean.assign(mean.astype(np.float32))
                layer.moving_variance.assign(var.astype(np.float32))
        self.recalibrate_at_end = False


class KerasApiSubject(ApiSubject):
    """A live Keras model on the torch backend, read in this process."""

    def recalibrated(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Exact population moments per BatchNormalization layer name."""
        rewritten = api.rewrite(self.model(), "recalibrate", data=self.data,
                                train_batch_size=self.train_batch_size, batch_size=self.batch_size)
        return {layer.name.rsplit(".", 1)[-1]: _moments(rewritten.model, layer.name)
                for layer in rewritten.model.layers()}


class ChildSubject:
    """A Keras model on another backend, checked by ``bncheck`` in a child process."""

    def __init__(self, model: Any, held: tuple[np.ndarray, ...], train_batch_size: int | None,
                 batch_size: int) -> None:
        if len(held) != 1:
            raise BncheckError("on Keras' non-torch backends the callback checks one-input "
                               "models; run Keras on its torch backend for several inputs")
        self.model = model
        self.held = held[0]
        self.samples = len(self.held)
        self.train_batch_size = train_batch_size
        self.batch_size = batch_size

    def compare(self) -> Mapping[str, Any]:
        """``bncheck compare --format json`` on the model saved as it is now."""
        with tempfile.TemporaryDirectory() as tmp:
            args = self._saved(Path(tmp))
            return json.loads(_child(["compare", *args, "--format", "json", "--fail-on",
                                      "mismatch"]))

    def one_pass(self, samples: int, batch_size: int) -> None:
        """One inference pass over the first ``samples`` held-out samples."""
        self.model.predict(self.held[:samples], batch_size=batch_size, verbose=0)

    def recalibrated(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Exact population moments per layer name, from ``bncheck rewrite --mode
        recalibrate`` in the child, read back from the ``.keras`` file it wrote."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "recalibrated.keras"
            _child(["rewrite", *self._saved(Path(tmp)), "--mode", "recalibrate", "-o", str(out)])
            fresh = keras.models.load_model(out, compile=False)
            return {layer.name: (np.asarray(layer.moving_mean), np.asarray(layer.moving_variance))
                    for layer in batch_norms(fresh)}

    def _saved(self, tmp: Path) -> list[str]:
        path, data = tmp / "model.keras", tmp / "held_out.npy"
        self.model.save(path)
        np.save(data, self.held)
        args = [str(path), "--data", str(data), "--batch-size", str(self.batch_size)]
        if self.train_batch_size is not None:
            args += ["--train-batch-size", str(self.train_batch_size)]
        return args


def _child(args: list[str]) -> str:
    """``bncheck ARGS`` in a child process; its stdout, or its one-sentence error raised."""
    done = subprocess.run([sys.executable, "-m", "bncheck", *args], capture_output=True,
                          text=True, check=False)
    if done.returncode not in (0, 1):
        lines = done.stderr.strip().splitlines()
        raise BncheckError(f"the check in a child process failed: "
                           f"{lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout


def _moments(model: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    module = model.net.get_submodule(name)
    return (module.running_mean.detach().cpu().numpy(),
            module.running_var.detach().cpu().numpy())
