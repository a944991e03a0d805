"""Checks during training, under each real framework: plain torch (bncheck.watch), PyTorch
Lightning and Keras (its torch backend in this process; TensorFlow in a child process).

Each trains the pix2pix-layout U-Net at batch size 1 (the seed's case: the warning must appear)
and at batch size 16 (healthy: it must not), and checks that a check never changes training:
the weights after training with and without the callback are bitwise equal.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bncheck.errors import BncheckError
from fixtures.archs import DigitsNet, PixNet
from fixtures.make_fixtures import digits_data, pix_pairs
from tests.support import tv_shim

# torchmetrics, which Lightning imports, imports torchvision.
tv_shim.install()
ROOT = Path(__file__).resolve().parent.parent
HELD_X, HELD_Y = pix_pairs(128, np.random.default_rng(99))
# The healthy model: the digits classifier at batch size 32, checked on held-out digits.
DIGITS_X, DIGITS_Y, DIGITS_HELD, _ = digits_data()
DIGITS_HELD = DIGITS_HELD[:128]
WARNING = "eval mode is"


def pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = pix_pairs(n, np.random.default_rng(seed))
    return torch.from_numpy(x), torch.from_numpy(y)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bncheck" and r.levelno == logging.WARNING]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- plain torch ---------------------------------------------------------------------------------

def train_plain(batch_size: int, steps: int, watched: bool = False, **watch: Any
                ) -> tuple[nn.Module, Any]:
    """The U-Net at batch size 1, or the digits classifier at any other."""
    import bncheck

    torch.manual_seed(0)
    if batch_size == 1:
        x, y = pairs(steps, seed=1)
        model, held, loss_fn = PixNet(), HELD_X, nn.functional.l1_loss
    else:
        idx = np.random.default_rng(1).integers(0, len(DIGITS_X), batch_size * steps)
        x, y = torch.from_numpy(DIGITS_X[idx]), torch.from_numpy(DIGITS_Y[idx])
        model, held, loss_fn = DigitsNet(), DIGITS_HELD, nn.functional.cross_entropy
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    w = bncheck.watch(model, held, **watch) if watched or watch else None
    for s in range(steps):
        xb, yb = x[s * batch_size:(s + 1) * batch_size], y[s * batch_size:(s + 1) * batch_size]
        # torch.rand draws here make any RNG change in a check visible in the weights.
        noise = torch.rand(()) * 1e-3
        loss = loss_fn(model(xb + noise), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if w is not None:
        w.close()
    return model, w


def test_watch_warns_for_batch_one_and_not_for_healthy(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bncheck")
    model, w = train_plain(1, 300, every=100)
    assert [c.verdict for c in w.checks] == ["mismatch", "mismatch"]
    assert w.checks[-1].fix == "instance-norm" and w.checks[-1].first_failing_layer == "enc1.1"
    lines = warnings_in(caplog)
    assert len(lines) == 1 and "step 100" in lines[0] and "instance-norm" in lines[0]
    assert model.training  # the check ran on a copy: the model is still in train mode
    caplog.clear()
    _, healthy = train_plain(32, 150, every=50)
    verdicts = [c.verdict for c in healthy.checks] + [healthy.check().verdict]
    assert "ok" in verdicts and "mismatch" not in verdicts
    assert warnings_in(caplog) == []


def test_watch_leaves_training_bitwise_equal() -> None:
    alone, _ = train_plain(1, 60)
    watched, w = train_plain(1, 60, every=20)
    assert len(w.checks) == 2
    assert same_weights(alone, watched)


def test_watch_fail_on_stops_and_recalibrate_changes_only_the_statistics() -> None:
    import bncheck
    from bncheck.integrations.pytorch import TrainingStopped

    with pytest.raises(TrainingStopped, match="instance-norm"):
        train_plain(1, 60, every=20, fail_on="mismatch")
    model, _ = train_plain(32, 40)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with bncheck.watch(model, DIGITS_HELD, train_batch_size=32) as w:
        assert w.recalibrate() == 6  # running mean and var of 3 layers
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith(("running_mean", "running_var")) for k in changed)
    # What recalibrate wrote is what the API computes.
    fresh = bncheck.recalibrate(model, DIGITS_HELD, train_batch_size=32)
    assert all(torch.allclose(a, b) for (ka, a), (_, b) in
               zip(fresh.state_dict().items(), model.state_dict().items(), strict=True)
               if ka.endswith("running_var"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"every": 0}, "every=0"), ({"budget": 2.0}, "budget=2.0"),
    ({"fail_on": "sometimes"}, "fail_on='sometimes'"), ({"samples": 0}, "samples=0")])
def test_watch_refuses_bad_parameters_before_any_work(kwargs: dict[str, Any],
                                                      message: str) -> None:
    import bncheck

    with pytest.raises(BncheckError, match=message):
        bncheck.watch(PixNet(), HELD_X, **kwargs)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSubject:
    """A check that costs 1.0 s of the fake clock and a pass over the 128 held-out samples
    that costs 0.2 s at any batch size."""

    samples, train_batch_size, batch_size = 128, None, 32

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def compare(self) -> dict[str, Any]:
        self.clock.now += 1.0
        return {"verdict": "ok", "candidates": {"eval": {"mean": 0.1}}, "tolerance": 0.2,
                "first_failing_layer": None,
                "recommendation": {"mode": "none", "reason": "within tolerance",
                                   "conditional": {"mode": "none"}}}

    def one_pass(self, samples: int, batch_size: int) -> None:
        self.clock.now += 0.2 * samples / self.samples


def test_default_interval_keeps_to_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Units of 0.5 s and checks of 1 s: at the 3% budget, a check about every 67 units, the
    first once its estimate (6 passes) fits, and the time checking never above 3% plus one."""
    from bncheck.integrations import watcher as wmod

    clock = FakeClock()
    monkeypatch.setattr(wmod.time, "perf_counter", clock)
    w = wmod.Watcher(every=None)
    subject = FakeSubject(clock)
    checked_at = []
    for unit in range(1, 1001):
        clock.now += 0.5
        if w.after_unit(subject, f"step {unit}") is not None:
            checked_at.append(unit)
        assert w.spent <= 0.03 * w.training_seconds() + 1.0
    assert 13 <= len(checked_at) <= 16, checked_at
    assert checked_at[0] >= 40  # not before the training time pays for it
    assert w.spent <= 0.031 * w.training_seconds()
    every = wmod.Watcher(every=100)
    assert sum(every.after_unit(subject, "x") is not None for _ in range(1000)) == 10


def test_the_end_of_a_short_run_checks_within_five_percent_or_says_why(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A run too short for the 3% budget gets its one check at the end if that stays under 5%
    (here 1.4 s of 29.8 s), and otherwise a line saying why no check ran."""
    from bncheck.integrations import watcher as wmod

    caplog.set_level(logging.WARNING, "bncheck")
    for units, checked in ((60, True), (10, False)):
        clock = FakeClock()
        monkeypatch.setattr(wmod.time, "perf_counter", clock)
        w = wmod.Watcher(every=None)
        subject = FakeSubject(clock)
        for unit in range(units):
            clock.now += 0.5
            assert w.after_unit(subject, f"epoch {unit}") is None
        assert (w.at_end(subject, "end of training") is not None) is checked
        assert w.spent <= 0.05 * w.training_seconds() + (0 if checked else 1.4)
    assert len(warnings_in(caplog)) == 1 and "no check ran" in warnings_in(caplog)[0]


# --- Lightning -----------------------------------------------------------------------------------

def lightning_run(batch_size: int, epochs: int, tmp_path: Path, callback: Any = None,
                  checkpoint: bool = False) -> tuple[Any, Any]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    pix = batch_size == 1

    class Module(pl.LightningModule):
        """The U-Net at batch size 1, the digits classifier at any other."""

        def __init__(self) -> None:
            super().__init__()
            self.net = PixNet() if pix else DigitsNet()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.l1_loss if pix else nn.functional.cross_entropy
            return loss(self(x + torch.rand(()) * 1e-3), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=2e-3)

    pl.seed_everything(0, verbose=False)
    x, y = pairs(100, seed=1) if pix else (torch.from_numpy(DIGITS_X), torch.from_numpy(DIGITS_Y))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    module = Module()
    callbacks = [] if callback is None else [callback]
    if checkpoint:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True))
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False,
                         enable_checkpointing=checkpoint, enable_progress_bar=False,
                         enable_model_summary=False, deterministic=True,
                         default_root_dir=tmp_path)
    trainer.fit(module, loader)
    return module, trainer


def test_lightning_warns_for_batch_one_and_not_for_healthy(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bncheck.integrations.lightning import BNCheckCallback

    caplog.set_level(logging.WARNING, "bncheck")
    cb = BNCheckCallback(HELD_X, every_n_epochs=1)
    _, trainer = lightning_run(1, 3, tmp_path, cb)
    assert [c.verdict for c in cb.checks] == ["mismatch"] * 3
    assert trainer.callback_metrics["bncheck/mismatch"] == 1.0
    assert len(warnings_in(caplog)) == 1 and "net.enc1.1" in warnings_in(caplog)[0]
    caplog.clear()
    healthy = BNCheckCallback(DIGITS_HELD, every_n_epochs=1)
    lightning_run(32, 3, tmp_path, healthy)
    verdicts = [c.verdict for c in healthy.checks]
    assert "ok" in verdicts and "mismatch" not in verdicts, verdicts
    assert warnings_in(caplog) == []


def test_lightning_leaves_training_bitwise_equal(tmp_path: Path) -> None:
    from bncheck.integrations.lightning import BNCheckCallback

    alone, _ = lightning_run(1, 2, tmp_path)
    cb = BNCheckCallback(HELD_X, every_n_epochs=1)
    watched, _ = lightning_run(1, 2, tmp_path, cb)
    assert len(cb.checks) == 2
    assert same_weights(alone, watched)


def test_lightning_fail_on_stops_and_recalibrates_before_the_last_checkpoint(
        tmp_path: Path) -> None:
    from bncheck.integrations.lightning import BNCheckCallback

    cb = BNCheckCallback(HELD_X, every_n_epochs=1, fail_on="mismatch")
    _, trainer = lightning_run(1, 5, tmp_path, cb)
    assert trainer.current_epoch == 1 and len(cb.checks) == 1  # stopped after the first epoch

    plain, _ = lightning_run(32, 1, tmp_path / "a", checkpoint=True)
    cb = BNCheckCallback(DIGITS_HELD, every_n_epochs=1, recalibrate_at_end=True)
    module, _ = lightning_run(32, 1, tmp_path / "b", cb, checkpoint=True)
    assert cb.recalibrated
    saved = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)["state_dict"]
    var = next(k for k in saved if k.endswith("running_var"))
    assert torch.equal(saved[var], module.state_dict()[var])
    assert not torch.equal(saved[var], plain.state_dict()[var])
    weights = [k for k in saved if not k.endswith(("running_mean", "running_var"))]
    assert all(torch.equal(saved[k], plain.state_dict()[k]) for k in weights)


# --- Keras ---------------------------------------------------------------------------------------

def keras_run(batch_size: int, epochs: int, callback: Any = None) -> Any:
    import keras

    from fixtures.keras_archs import digits, unet

    keras.utils.set_random_seed(0)
    if batch_size == 1:
        x, y = (nhwc(a) for a in pix_pairs(100, np.random.default_rng(1)))
        model = unet()
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mae")
    else:
        x, y = nhwc(DIGITS_X), DIGITS_Y
        model = digits()
        model.compile(optimizer=keras.optimizers.Adam(2e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                        callbacks=[] if callback is None else [callback])
    return model, history


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def test_keras_warns_for_batch_one_and_not_for_healthy(caplog: pytest.LogCaptureFixture) -> None:
    from bncheck.integrations.keras import BNCheckCallback

    caplog.set_level(logging.WARNING, "bncheck")
    cb = BNCheckCallback(nhwc(HELD_X), every_n_epochs=1, train_batch_size=1)
    _, history = keras_run(1, 2, cb)
    assert [c.verdict for c in cb.checks] == ["mismatch", "mismatch"]
    assert history.history["bncheck/mismatch"] == [1.0, 1.0]
    assert len(warnings_in(caplog)) == 1 and "instance-norm" in warnings_in(caplog)[0]
    caplog.clear()
    # Keras' momentum of 0.99 leaves the moving averages stale for the first few hundred steps
    # (a check then says so): the healthy model is checked once it has trained 440.
    healthy = BNCheckCallback(nhwc(DIGITS_HELD), every_n_epochs=10, train_batch_size=32)
    keras_run(32, 10, healthy)
    verdicts = [c.verdict for c in healthy.checks]
    assert "ok" in verdicts and "mismatch" not in verdicts, verdicts
    assert warnings_in(caplog) == []


def test_keras_leaves_training_bitwise_equal_and_stops_on_mismatch() -> None:
    from bncheck.integrations.keras import BNCheckCallback

    alone, _ = keras_run(1, 2)
    cb = BNCheckCallback(nhwc(HELD_X), every_n_epochs=1, train_batch_size=1)
    watched, _ = keras_run(1, 2, cb)
    assert len(cb.checks) == 2
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(alone.weights, watched.weights, strict=True))
    stop = BNCheckCallback(nhwc(HELD_X), every_n_epochs=1, train_batch_size=1,
                           fail_on="mismatch")
    _, history = keras_run(1, 4, stop)
    assert len(history.history["loss"]) == 1


def test_keras_recalibrate_at_end_writes_the_exact_statistics() -> None:
    import bncheck
    from bncheck.integrations.keras import BNCheckCallback

    cb = BNCheckCallback(nhwc(DIGITS_HELD), every_n_epochs=1, train_batch_size=32,
                         recalibrate_at_end=True)
    model, _ = keras_run(32, 1, cb)
    after = bncheck.compare(model, nhwc(DIGITS_HELD), train_batch_size=32)
    assert after.verdict.verdict.value == "ok"
    # Recalibrating again on the same data changes nothing: the statistics are the exact ones.
    layer = next(lay for lay in model.layers if "batch_normalization" in lay.name)
    again = bncheck.rewrite(model, "recalibrate", data=nhwc(DIGITS_HELD), train_batch_size=32)
    module = again.model.net.get_submodule(layer.name)
    assert np.allclose(module.running_var.numpy(), np.asarray(layer.moving_variance), rtol=1e-5)


CHILD = textwrap.dedent("""
    import os, sys, logging
    os.environ["KERAS_BACKEND"] = "tensorflow"
    sys.path.insert(0, {root!r})
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    import numpy as np, keras
    from fixtures.keras_archs import unet
    from fixtures.make_fixtures import pix_pairs
    from bncheck.integrations.keras import BNCheckCallback
    nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    keras.utils.set_random_seed(0)
    x, y = pix_pairs(100, np.random.default_rng(1))
    held, _ = pix_pairs(128, np.random.default_rng(99))
    model = unet()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mae")
    cb = BNCheckCallback(nhwc(held), every_n_epochs=2, train_batch_size=1)
    h = model.fit(nhwc(x), nhwc(y), batch_size=1, epochs=2, verbose=0, callbacks=[cb])
    print("backend", keras.backend.backend(), "checks", [c.verdict for c in cb.checks],
          "logged", h.history["bncheck/mismatch"])
""")


def test_keras_on_tensorflow_checks_in_a_child_process() -> None:
    pytest.importorskip("tensorflow")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT))], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "backend tensorflow checks ['mismatch'] logged [1.0]" in done.stdout
    assert "bncheck: epoch 1: eval mode is" in done.stderr
