"""The seed's own case, end to end: train a generator, ask bncheck, apply the fix it prints.

Each ``Case`` trains one generator of ``fixtures/generators.py`` (torch) or
``fixtures/keras_generators.py`` (Keras) on the exposure task at a batch size and BatchNorm
momentum, writes it and 128 held-out inputs as a user would have them, runs ``bncheck compare``
with no options, runs the rewrite command it prints verbatim in a shell, and measures the L1
error against the targets of eval mode, of the fixed file and of the model as trained (batch
statistics at its training batch size), independently of bncheck. Used by
``tests/test_seed_suite.py`` (a fast subset) and ``bench/seed_suite.py`` (the whole sweep).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fixtures import generators

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PAIRS = 512
HELD_OUT = 128


@dataclass(frozen=True)
class Case:
    """One trained generator: framework, architecture, training batch size, BN momentum in
    torch's convention (None: cumulative), per-sample exposure spread, training steps."""

    framework: str
    arch: str
    batch: int
    momentum: float | None
    spread: float
    steps: int

    @property
    def name(self) -> str:
        """A file-name-safe label."""
        m = "none" if self.momentum is None else f"{self.momentum:g}"
        return f"{self.framework}-{self.arch}-b{self.batch}-m{m}-s{self.spread:g}"

    @property
    def momentum_label(self) -> str:
        """The momentum as its framework writes it."""
        if self.momentum is None:
            return "None"
        if self.framework == "keras":
            return f"{1.0 - self.momentum:g} (torch {self.momentum:g})"
        return f"{self.momentum:g}"


@dataclass(frozen=True)
class Row:
    """What bncheck said of a case and what its fix measured."""

    case: Case
    verdict: str
    mode: str
    estimate: int
    source: str
    low: int | None
    high: int | None
    command: str
    l1_eval: float
    l1_train: float
    l1_fix: float | None
    seconds: float

    @property
    def covered(self) -> bool:
        """Whether the true batch size lies in the plausible range."""
        if self.low is None:
            return False
        return self.low <= self.case.batch and (self.high is None or self.case.batch <= self.high)

    @property
    def fix_ratio(self) -> float | None:
        """The fixed file's L1 over the trained behaviour's."""
        return None if self.l1_fix is None else self.l1_fix / self.l1_train


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["KERAS_BACKEND"] = "torch"
    return env


def _run_file(path: Path, x: np.ndarray) -> np.ndarray:
    """Outputs of a written model file on ``x``, by its own runtime."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: x[s:s + 32]})[0]
                               for s in range(0, len(x), 32)])
    if path.suffix == ".keras":
        import keras

        from fixtures.keras_generators import outputs

        return outputs(keras.saving.load_model(path), x, 32, training=False)
    raise ValueError(f"no runner for {path.suffix}")


def _torch_case(case: Case, work: Path) -> tuple[list[str], np.ndarray, float, float]:
    import torch

    x, y = generators.exposure_pairs(TRAIN_PAIRS, case.spread, seed=0)
    xt, yt = generators.exposure_pairs(HELD_OUT, case.spread, seed=1)
    model = generators.train(case.arch, x, y, batch_size=case.batch, momentum=case.momentum,
                             steps=case.steps)
    path = work / "model.pth"
    torch.save(model.state_dict(), path)
    # The user's own factory builds the network as it was trained, momentum included (a
    # state_dict does not hold it); compare and the fix it prints import it from ``work``.
    (work / "net.py").write_text(
        "from fixtures.generators import ARCHS, set_momentum\n\n\n"
        "def build():\n"
        f"    model = ARCHS[{case.arch!r}]()\n"
        f"    set_momentum(model, {case.momentum!r})\n"
        "    return model\n")
    np.save(work / "x.npy", xt)
    np.save(work / "y.npy", yt)
    l1_eval = generators.l1(generators.eval_outputs(model, xt), yt)
    l1_train = generators.l1(generators.train_mode_outputs(model, xt, case.batch), yt)
    return [str(path), "--arch", "net:build"], yt, l1_eval, l1_train


def _keras_case(case: Case, work: Path) -> tuple[list[str], np.ndarray, float, float]:
    from fixtures import keras_generators as kg

    assert case.momentum is not None, "Keras has no cumulative average"
    x, y = generators.exposure_pairs(TRAIN_PAIRS, case.spread, seed=0)
    xt, yt = generators.exposure_pairs(HELD_OUT, case.spread, seed=1)
    x, y, xt, yt = kg.nhwc(x), kg.nhwc(y), kg.nhwc(xt), kg.nhwc(yt)
    model = kg.train(case.arch, x, y, batch_size=case.batch, momentum=1.0 - case.momentum,
                     steps=case.steps)
    path = work / "model.keras"
    model.save(path)
    np.save(work / "x.npy", xt)
    np.save(work / "y.npy", yt)
    l1_eval = generators.l1(kg.outputs(model, xt, 32, training=False), yt)
    l1_train = generators.l1(kg.outputs(model, xt, case.batch, training=True), yt)
    return [str(path)], yt, l1_eval, l1_train


def run_case(case: Case, work: Path) -> Row:
    """Train, compare with no options, apply the printed fix verbatim, measure."""
    work.mkdir(parents=True, exist_ok=True)
    build = _keras_case if case.framework == "keras" else _torch_case
    model_args, yt, l1_eval, l1_train = build(case, work)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bncheck", "compare", model_args[0], "--data",
                           str(work / "x.npy"), *model_args[1:], "--format", "json"],
                          capture_output=True, text=True, env=_env(), cwd=work, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"compare of {case.name} failed: {done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    rec, est = doc["recommendation"], doc["train_batch_size"]
    plausible = est.get("plausible") or {}
    command = rec.get("command", "")
    l1_fix = None
    if command:
        fixed = subprocess.run(command, shell=True, capture_output=True, text=True, env=_env(),
                               cwd=work, check=False)
        if fixed.returncode != 0:
            raise RuntimeError(f"the printed fix of {case.name} failed: {fixed.stderr[-2000:]}")
        args = shlex.split(command)
        out = work / args[args.index("-o") + 1]
        l1_fix = generators.l1(_run_file(out, np.load(work / "x.npy")), yt)
    return Row(case, doc["verdict"], rec["mode"], est["value"], est["source"],
               plausible.get("low"), plausible.get("high"), command, l1_eval, l1_train, l1_fix,
               time.perf_counter() - start)


def table(rows: list[Row]) -> str:
    """The suite as a Markdown table."""
    head = ("| framework | arch | true B | momentum | exposure spread | estimated B (plausible) "
            "| verdict | fix | L1 eval | L1 fixed | L1 as trained | fixed / trained |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        c = r.case
        span = "-" if r.low is None else f"{r.low}-{'inf' if r.high is None else r.high}"
        fixed = "-" if r.l1_fix is None else f"{r.l1_fix:.3f}"
        ratio = "-" if r.fix_ratio is None else f"{r.fix_ratio:.3f}"
        lines.append(f"| {c.framework} | {c.arch} | {c.batch} | {c.momentum_label} | "
                     f"{c.spread:g} | {r.estimate} {r.source} ({span}) | {r.verdict} | "
                     f"{r.mode} | {r.l1_eval:.3f} | {fixed} | {r.l1_train:.3f} | {ratio} |")
    return head + "\n".join(lines) + "\n"
