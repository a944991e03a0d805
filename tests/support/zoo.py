"""The model zoo: the BatchNorm architectures people train, each checked end to end.

Every entry is a real architecture (torchvision, timm, keras.applications) with random weights,
trained here for a few dozen steps on a proxy task (which of sklearn's two photos, and which
quadrant of it, a crop comes from: 8 classes) with the learning rate decayed to zero. A torch
model's running statistics are then re-estimated over the training set, so they are those of
real data under its final weights, as a long-trained model's are; a Keras model keeps what its
momentum-0.9 moving averages hold.
:func:`sweep` then runs every bncheck command on it as a user would (the CLI, in this process)
and checks what issue 35 asks; ``bench/zoo.py`` writes the table, ``tests/test_zoo.py`` runs a
fast subset.

Torch entries are read as a state_dict with ``--arch tests.support.zoo:NAME`` (this module's
``__getattr__`` gives the factories); Keras ones as ``.keras`` files.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bncheck.backends.keras.graph import batch_norms
from bncheck.core.judgement.tolerance import MAX_TOLERANCE, tolerance_for

CLASSES = 8
TRAIN_SAMPLES, HELD_OUT, TRAIN_BATCH = 1024, 128, 32
STEPS = 60
# A fix "worsens" the output when it moves it further from the trained behaviour than eval mode
# is, by more than this (relative L2); "restores" when the corrupted model's fixed output is
# within this of the healthy model's gap. Where compare finds the trained behaviour dominated by
# batch noise (its tolerance above the cap), the gap measures that noise more than the fix:
# there "restores" means a held-out accuracy within this of the healthy model's.
SLACK = 0.02
FOLD_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Entry:
    """One zoo model: how to build it (random weights) and at which input size."""

    name: str
    family: str
    framework: str  # "torch" or "keras"
    build: Callable[[], Any]
    size: int = 64
    segmentation: bool = False
    # What is done to the trained model before it is saved: "freeze" turns its BatchNorm into
    # timm's FrozenBatchNorm2d (fine-tuning a detector backbone does).
    finish: str | None = None


# --- the catalog ---------------------------------------------------------------------------------

def _tv(fn: str, **kwargs: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        from tests.support import tv_shim

        tv_shim.install()
        import torchvision.models as tvm
        import torchvision.models.segmentation as tvs

        torch.manual_seed(0)
        factory = getattr(tvm, fn, None) or getattr(tvs, fn)
        return factory(num_classes=CLASSES, **kwargs)
    return build


def _timm(name: str, norm: str | None = None) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        from tests.support import tv_shim

        tv_shim.install()
        import timm
        from timm.layers import EvoNorm2dB0

        torch.manual_seed(0)
        kwargs = {"norm_layer": EvoNorm2dB0} if norm == "evonorm" else {}
        model = timm.create_model(name, num_classes=CLASSES, **kwargs)
        if norm == "sync":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model
    return build


def _keras(name: str, size: int) -> Callable[[], Any]:
    def build() -> Any:
        import keras

        keras.utils.set_random_seed(0)
        factory = getattr(keras.applications, name)
        return factory(weights=None, classes=CLASSES, classifier_activation=None,
                       input_shape=(size, size, 3))
    return build


TORCHVISION: tuple[Entry, ...] = tuple(
    Entry(f"tv_{fn}", "torchvision", "torch", _tv(fn, **kw), size, seg)
    for fn, size, seg, kw in (
        ("resnet18", 64, False, {}), ("resnet50", 64, False, {}),
        ("resnext50_32x4d", 64, False, {}), ("wide_resnet50_2", 64, False, {}),
        ("densenet121", 64, False, {}), ("mobilenet_v2", 64, False, {}),
        ("mobilenet_v3_small", 64, False, {}), ("mobilenet_v3_large", 64, False, {}),
        ("efficientnet_b0", 64, False, {}), ("efficientnet_v2_s", 64, False, {}),
        ("regnet_y_400mf", 64, False, {}), ("regnet_x_400mf", 64, False, {}),
        ("mnasnet0_5", 64, False, {}), ("shufflenet_v2_x0_5", 64, False, {}),
        ("googlenet", 64, False, {"aux_logits": False, "init_weights": True}),
        ("inception_v3", 80, False, {"aux_logits": False, "init_weights": True}),
        ("convnext_tiny", 64, False, {}),
        ("deeplabv3_mobilenet_v3_large", 64, True, {"weights_backbone": None}),
        ("fcn_resnet50", 64, True, {"weights_backbone": None}),
        ("lraspp_mobilenet_v3_large", 64, True, {"weights_backbone": None})))

TIMM: tuple[Entry, ...] = tuple(
    Entry(f"timm_{label}", family, "torch", build, 64,
          finish="freeze" if label.endswith("frozen") else None)
    for label, family, build in (
        ("resnet18", "timm BatchNorm2d", _timm("resnet18")),
        ("efficientnet_b0", "timm BatchNormAct2d", _timm("efficientnet_b0")),
        ("mobilenetv3_small_100", "timm BatchNormAct2d", _timm("mobilenetv3_small_100")),
        ("cspresnet50", "timm BatchNormAct2d", _timm("cspresnet50")),
        ("regnety_002", "timm BatchNormAct2d", _timm("regnety_002")),
        ("rexnet_100", "timm BatchNormAct2d", _timm("rexnet_100")),
        ("ghostnet_100", "timm BatchNorm2d", _timm("ghostnet_100")),
        ("dla34", "timm BatchNorm2d", _timm("dla34")),
        ("resnet18_frozen", "timm FrozenBatchNorm2d", _timm("resnet18")),
        ("efficientnet_b0_sync", "SyncBatchNorm-converted", _timm("efficientnet_b0", "sync")),
        ("resnet18_evonorm", "timm EvoNorm2dB0", _timm("resnet18", "evonorm"))))

KERAS: tuple[Entry, ...] = tuple(
    Entry(f"keras_{name}", "keras.applications", "keras", _keras(name, size), size)
    for name, size in (("ResNet50", 64), ("MobileNetV2", 64), ("MobileNetV3Small", 64),
                       ("EfficientNetB0", 64), ("DenseNet121", 64), ("Xception", 72)))

ENTRIES: tuple[Entry, ...] = TORCHVISION + TIMM + KERAS
BY_NAME = {e.name: e for e in ENTRIES}


def __getattr__(name: str) -> Callable[[], Any]:
    """``--arch tests.support.zoo:NAME``: the factory of a torch entry, as trained."""
    entry = BY_NAME.get(name)
    if entry is None or entry.framework != "torch":
        raise AttributeError(name)
    return lambda: _finished(entry, entry.build())


def _finished(entry: Entry, model: Any) -> Any:
    if entry.finish == "freeze":
        from timm.layers import freeze_batch_norm_2d

        model = freeze_batch_norm_2d(model)
    return model


# --- data and training ---------------------------------------------------------------------------

def labelled_crops(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` ``size``x``size`` crops of sklearn's two photos (NCHW, ImageNet-normalized) and
    their class: which photo, and which quadrant of it the crop's centre lies in."""
    from sklearn.datasets import load_sample_images

    images = [im.astype(np.float32) / 255.0 for im in load_sample_images().images]
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3, size, size), np.float32)
    y = np.empty(n, np.int64)
    for i in range(n):
        k = int(rng.integers(len(images)))
        im = images[k]
        span = int(rng.integers(size, 3 * size))
        top, left = rng.integers(0, im.shape[0] - span), rng.integers(0, im.shape[1] - span)
        rows = np.linspace(top, top + span - 1, size).astype(int)
        cols = np.linspace(left, left + span - 1, size).astype(int)
        x[i] = im[rows][:, cols].transpose(2, 0, 1)
        quadrant = 2 * int(top + span / 2 > im.shape[0] / 2) + int(left + span / 2 > im.shape[1] / 2)
        y[i] = 4 * k + quadrant
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    return (x - mean) / std, y


def _logits(out: Any) -> np.ndarray:
    """Class scores from a classifier's logits or a segmentation model's maps (their spatial
    mean), whatever container they come in."""
    if isinstance(out, dict):
        out = out["out"]
    if isinstance(out, (list, tuple)):
        out = out[0]
    a = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, np.float64)
    return a.mean(axis=(2, 3)) if a.ndim == 4 else a


def train_torch(entry: Entry, x: np.ndarray, y: np.ndarray) -> Any:
    """The entry's network after STEPS Adam steps at batch TRAIN_BATCH, learning rate decayed
    linearly to zero (the last steps barely move the weights: the running statistics are those
    of the final network)."""
    import torch
    from torch import nn

    model = entry.build()
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / STEPS)
    order = _order(len(x))
    model.train()
    for step in range(STEPS):
        idx = order[step * TRAIN_BATCH:(step + 1) * TRAIN_BATCH]
        out = model(torch.from_numpy(x[idx]))
        scores = out["out"].mean(dim=(2, 3)) if entry.segmentation else out
        loss = nn.functional.cross_entropy(scores, torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    _settle(model, x)
    return _finished(entry, model).eval()


def _settle(model: Any, x: np.ndarray) -> None:
    """Re-estimate the running statistics in train mode over ``x`` as a cumulative average
    (PreciseBN), as they settle in the last epochs of a long run: torchvision's MobileNetV3 and
    EfficientNet train with momentum 0.01, under which a few dozen steps leave them mostly the
    initialiser's (eval mode then departs by a relative L2 of 1.0)."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for s in range(0, len(x), TRAIN_BATCH):
            model(torch.from_numpy(x[s:s + TRAIN_BATCH]))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def train_keras(entry: Entry, x: np.ndarray, y: np.ndarray) -> Any:
    """As :func:`train_torch`, channels-last, with BatchNormalization momentum 0.9 (Keras'
    0.99 would leave the moving statistics mostly those of the initialiser after STEPS)."""
    import keras

    model = entry.build()
    for layer in batch_norms(model):
        layer.momentum = 0.9
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-3, STEPS, 0.0)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras.utils.set_random_seed(1)
    order = _order(len(x))
    model.fit(nhwc(x)[order], y[order], batch_size=TRAIN_BATCH, epochs=1, shuffle=False,
              verbose=0)
    return model


def _order(n: int) -> np.ndarray:
    """The samples of STEPS batches, in a seeded order, every sample before any repeats."""
    return np.resize(np.random.default_rng(2).permutation(n), STEPS * TRAIN_BATCH)


def nhwc(x: np.ndarray) -> np.ndarray:
    """Channels-last, as Keras takes images."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


# --- the sweep -----------------------------------------------------------------------------------

@dataclass
class Row:
    """What the sweep measured on one entry; ``problems`` empty is a pass."""

    entry: Entry
    norms: int = 0
    layers: int | None = None
    compare: str = "-"
    fix: str = "-"
    corrupted: str = "-"
    corrupted_fix: str = "-"
    fold: str = "-"
    instance_norm: str = "-"
    batch_stats: str = "-"
    seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Ran:
    """One bncheck command, run in this process."""

    code: int
    out: str
    err: str
    seconds: float
    cwd: Path

    def error(self) -> str:
        """Its one-sentence error (exit 2), paths relative to the model's folder."""
        if not self.err.strip():
            return f"exit {self.code}"
        line = self.err.strip().splitlines()[-1].removeprefix("bncheck: error: ")
        return line.replace(f"{self.cwd}/", "")


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def bncheck(args: list[str], cwd: Path) -> Ran:
    """``bncheck ARGS`` through the CLI in this process (a bug raises its traceback)."""
    from typer.testing import CliRunner

    from bncheck.cli.app import app

    with _cwd(cwd):
        t = time.perf_counter()
        r = CliRunner().invoke(app, args)
        seconds = time.perf_counter() - t
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Ran(r.exit_code, r.stdout, r.stderr, seconds, cwd)


class Subject:
    """A trained zoo model on disk, with what the checks need to run it and its outputs."""

    def __init__(self, entry: Entry, work: Path) -> None:
        self.entry = entry
        self.work = work
        x, y = labelled_crops(TRAIN_SAMPLES, entry.size, seed=0)
        self.x, self.y = labelled_crops(HELD_OUT, entry.size, seed=1)
        self.keras = entry.framework == "keras"
        if self.keras:
            self.model = train_keras(entry, x, y)
            self.data = nhwc(self.x)
        else:
            self.model = train_torch(entry, x, y)
            self.data = self.x
        np.save(work / "data.npy", self.data)
        self.path = self.save(self.model, "model")
        self.eval_out = self.outputs(self.model, training=False)
        self.reference = self.outputs(self.model, training=True)

    def args(self, path: Path) -> list[str]:
        """MODEL (relative to the model's folder, where every command runs) and the options
        that read it."""
        if self.keras:
            return [path.name]
        return [path.name, "--arch", f"tests.support.zoo:{self.entry.name}"]

    def save(self, model: Any, stem: str) -> Path:
        """The model as the user has it: a .keras file, or a state_dict for --arch."""
        if self.keras:
            path = self.work / f"{stem}.keras"
            model.save(path)
            return path
        import torch

        path = self.work / f"{stem}.pth"
        torch.save(model.state_dict(), path)
        return path

    def norm_count(self) -> int:
        """Normalization modules, by their class name (BatchNormAct2d, LayerNorm2d and EvoNorm
        included, a head that holds one not); BatchNormalization layers in Keras."""
        if self.keras:
            return len(batch_norms(self.model))
        return sum(1 for m in self.model.modules()
                   if "Norm" in type(m).__name__
                   and not any("Norm" in type(c).__name__ for c in m.children()))

    def batch_norm_count(self) -> int:
        """The normalization modules that keep running statistics."""
        if self.keras:
            return self.norm_count()
        return sum(1 for m in self.model.modules() if hasattr(m, "running_var"))

    def outputs(self, model: Any, training: bool, x: np.ndarray | None = None) -> np.ndarray:
        """Class scores on the held-out set at the training batch size: eval mode, or the
        trained behaviour (normalization on batch statistics, dropout off, nothing updated)."""
        data = self.data if x is None else x
        if self.keras:
            from fixtures.keras_generators import outputs

            return _logits(outputs(model, data, TRAIN_BATCH, training=training))
        import torch

        model = copy.deepcopy(model).eval()
        if training:
            for m in model.modules():
                if hasattr(m, "running_mean") and hasattr(m, "momentum"):
                    m.train()
                    m.momentum = 0.0
        with torch.no_grad():
            return np.concatenate([_logits(model(torch.from_numpy(data[s:s + TRAIN_BATCH])))
                                   for s in range(0, len(data), TRAIN_BATCH)])

    def gap(self, out: np.ndarray) -> float:
        """Relative L2 of ``out`` from the trained behaviour."""
        return float(np.linalg.norm(out - self.reference) / np.linalg.norm(self.reference))

    def accuracy(self, out: np.ndarray) -> float:
        """Share of held-out crops classified right."""
        return float((out.argmax(1) == self.y).mean())

    def corrupted(self) -> Path:
        """The model with running statistics never updated (mean 0, variance 1), as when
        BatchNorm was frozen or left in eval mode through training."""
        model = copy.deepcopy(self.model)
        if self.keras:
            for layer in batch_norms(model):
                layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
                layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
        else:
            for m in model.modules():
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.zero_()
                if getattr(m, "running_var", None) is not None:
                    m.running_var.fill_(1.0)
        return self.save(model, "corrupted")

    def run_file(self, path: Path, x: np.ndarray | None = None) -> np.ndarray:
        """Class scores of a written model file on ``x`` (the held-out set), by its runtime."""
        data = self.data if x is None else x
        if path.suffix == ".onnx":
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            return np.concatenate([_logits(sess.run(None, {name: data[s:s + TRAIN_BATCH]})[0])
                                   for s in range(0, len(data), TRAIN_BATCH)])
        if path.suffix == ".keras":
            import keras

            return self.outputs(keras.saving.load_model(path), training=False, x=data)
        import torch

        model = __getattr__(self.entry.name)()
        model.load_state_dict(_state_dict(torch.load(path, weights_only=True)))
        return self.outputs(model, training=False, x=data)


def _state_dict(obj: Any) -> Any:
    return obj.get("state_dict", obj) if isinstance(obj, dict) else obj


def _verdict(doc: dict[str, Any]) -> str:
    return f"{doc['verdict']}, {doc['recommendation']['mode']}"


def _apply(subject: Subject, command: str, row: Row, key: str) -> np.ndarray | None:
    """Run a command compare printed, verbatim; the fixed model's outputs (None: no command,
    or it failed, which ``row`` then says)."""
    if not command:
        return None
    args = shlex.split(command)
    assert args[0] == "bncheck", command
    ran = bncheck(args[1:], subject.work)
    row.seconds[key] = ran.seconds
    if ran.code != 0:
        row.problems.append(f"the printed fix `{command}` failed: {ran.error()}")
        return None
    out = subject.work / args[args.index("-o") + 1]
    return subject.run_file(out)


def _noisy(doc: dict[str, Any]) -> bool:
    """compare found the trained behaviour dominated by batch noise."""
    return doc["verdict"] == "inconclusive" and "batch noise" in doc["recommendation"]["reason"]


def _floor(doc: dict[str, Any]) -> float:
    floor = doc["noise_floor"]
    return float(floor["mean"] if isinstance(floor, dict) else floor)


def sweep(entry: Entry, work: Path) -> Row:
    """Train ``entry``, run every command on it, and check what each must do."""
    work.mkdir(parents=True, exist_ok=True)
    row = Row(entry)
    subject = Subject(entry, work)
    row.norms = subject.norm_count()
    model_args = subject.args(subject.path)

    ran = bncheck(["inspect", *model_args, "--format", "json"], work)
    row.seconds["inspect"] = ran.seconds
    if ran.code == 2:
        row.problems.append(f"inspect: {ran.error()}")
        return row
    listing = json.loads(ran.out)
    row.layers = len(listing["layers"])
    # Norm modules bncheck does not model are not layers, but one error names them.
    said = any(f["code"] == "hidden-norm" for f in listing["findings"])
    if row.layers != row.norms and not (said and row.layers < row.norms):
        row.problems.append(f"inspect lists {row.layers} layers of {row.norms} norm modules")
    if subject.batch_norm_count() == 0:
        ran = bncheck(["compare", *model_args, "--data", "data.npy", "--format", "json"], work)
        row.seconds["compare"] = ran.seconds
        doc = json.loads(ran.out) if ran.code in (0, 1) else None
        if doc is None or doc["verdict"] != "ok":
            row.problems.append("compare on a model with no running statistics: "
                                f"{ran.error() if doc is None else _verdict(doc)}")
        else:
            row.compare = f"ok: {doc['recommendation']['reason']}"
            row.note = "no BatchNorm: nothing depends on the batch"
        return row

    doc = _check_compare(subject, row, model_args)
    if doc is None:
        return row
    if doc["candidates"]:
        _check_corrupted(subject, row)
    else:
        row.note = ("its normalization uses the same statistics in training and eval: nothing "
                    "depends on the batch, whatever they hold")
    _check_rewrites(subject, row, model_args)
    return row


def _check_compare(subject: Subject, row: Row, model_args: list[str]) -> dict[str, Any] | None:
    """compare on the healthy model, and its printed fix applied; its JSON (None: refused)."""
    ran = bncheck(["compare", *model_args, "--data", "data.npy", "--format", "json"],
                  subject.work)
    row.seconds["compare"] = ran.seconds
    if ran.code == 2:
        row.compare = "refused"
        row.problems.append(f"compare: {ran.error()}")
        return None
    doc: dict[str, Any] = json.loads(ran.out)
    gap_eval = subject.gap(subject.eval_out)
    row.compare = f"{_verdict(doc)} (eval gap {gap_eval:.3f})"
    fixed = _apply(subject, doc["recommendation"]["command"], row, "fix")
    if fixed is not None:
        gap_fix = subject.gap(fixed)
        row.fix = f"gap {gap_fix:.3f}, accuracy {subject.accuracy(fixed):.2f} " \
                  f"(eval {subject.accuracy(subject.eval_out):.2f})"
        if gap_fix > gap_eval + SLACK:
            row.problems.append(f"the printed fix moves the output away from the trained "
                                f"behaviour: gap {gap_eval:.3f} -> {gap_fix:.3f}")
    return doc


def _check_corrupted(subject: Subject, row: Row) -> None:
    path = subject.corrupted()
    ran = bncheck(["compare", *subject.args(path), "--data", "data.npy", "--format", "json"],
                  subject.work)
    row.seconds["compare corrupted"] = ran.seconds
    if ran.code == 2:
        row.problems.append(f"compare (corrupted): {ran.error()}")
        return
    doc = json.loads(ran.out)
    row.corrupted = _verdict(doc)
    if doc["verdict"] == "mismatch":
        fixed = _apply(subject, doc["recommendation"]["command"], row, "fix corrupted")
    else:
        # A reference dominated by batch noise can carry no verdict; what compare printed
        # instead (the conditional recalibrate) is applied and shown.
        row.problems.append(
            f"no verdict: after {STEPS} training steps the outputs are dominated by batch noise "
            f"at batch size {TRAIN_BATCH} (noise floor {_floor(doc):.2f})" if _noisy(doc) else
            f"never-updated statistics not flagged: {row.corrupted}")
        conditional = doc["recommendation"]["conditional"]
        row.corrupted += f" (if: {conditional['mode']})"
        fixed = _apply(subject, conditional.get("command", ""), row, "fix corrupted")
    if fixed is None:
        if not row.problems:
            row.problems.append("never-updated statistics flagged with no fix printed")
        return
    healthy, gap_fix = subject.gap(subject.eval_out), subject.gap(fixed)
    accuracy, healthy_accuracy = subject.accuracy(fixed), subject.accuracy(subject.eval_out)
    row.corrupted_fix = f"gap {gap_fix:.3f} (healthy {healthy:.3f}), accuracy {accuracy:.2f} " \
                        f"(healthy {healthy_accuracy:.2f})"
    if gap_fix <= healthy + SLACK:
        return
    if tolerance_for(_floor(doc)) > MAX_TOLERANCE and accuracy >= healthy_accuracy - SLACK:
        row.corrupted_fix += f"; judged by accuracy, the reference's noise floor being " \
                             f"{_floor(doc):.2f}"
        return
    row.problems.append(f"the printed fix leaves the corrupted model at gap {gap_fix:.3f} "
                        f"(healthy {healthy:.3f}), accuracy {accuracy:.2f} (healthy "
                        f"{healthy_accuracy:.2f})")


def _bn_nodes(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    graphs = [model.graph, *(f for f in model.functions)]
    return sum(n.op_type in ("BatchNormalization", "InstanceNormalization")
               for g in graphs for n in g.node)


def _check_rewrites(subject: Subject, row: Row, model_args: list[str]) -> None:
    for mode in ("fold", "instance-norm", "batch-stats"):
        out = subject.work / f"{mode}.onnx"
        ran = bncheck(["rewrite", *model_args, "--mode", mode, "-o", out.name, "--data",
                       "data.npy", "--force"], subject.work)
        row.seconds[mode] = ran.seconds
        if ran.code != 0:
            setattr(row, mode.replace("-", "_"), "refused")
            row.problems.append(f"rewrite --mode {mode}: {ran.error()}")
            continue
        got = subject.run_file(out)  # loads in onnxruntime, or raises
        if mode == "fold":
            left = _bn_nodes(out)
            err = float(np.linalg.norm(got - subject.eval_out) / np.linalg.norm(subject.eval_out))
            row.fold = f"{left} BN left, {err:.1e}"
            if left or err > FOLD_TOLERANCE:
                row.problems.append(f"fold: {left} BatchNormalization nodes left, relative "
                                    f"error {err:.1e}")
        elif mode == "instance-norm":
            alone = np.concatenate([subject.run_file(out, subject.data[i:i + 1])
                                    for i in range(4)])
            err = float(np.abs(alone - got[:4]).max() / np.abs(got[:4]).max())
            row.instance_norm = f"verified, batch-independent ({err:.0e})"
            if err > FOLD_TOLERANCE:
                row.problems.append(f"instance-norm: a sample alone differs from in a batch "
                                    f"by {err:.1e}")
        else:
            row.batch_stats = "verified"


def _grouped(problems: list[str]) -> str:
    """The problems in one line, those with the same error said once: "a, b: error"."""
    heads: dict[str, list[str]] = {}
    for problem in problems:
        head, sep, error = problem.partition(": ")
        heads.setdefault(error if sep else problem, []).append(head if sep else "")
    return "; ".join(f"{', '.join(h)}: {error}" if any(h) else error
                     for error, h in heads.items())


def table(rows: list[Row]) -> str:
    """The markdown table of ``rows``."""
    head = ("| model | family | input | norm modules | inspect | compare (own data) | "
            "printed fix applied | stats never updated | its printed fix applied | "
            "fold to ONNX (BN left, rel. error) | instance-norm | batch-stats | seconds | "
            "result |\n|" + "---|" * 14)
    lines = [head]
    for r in rows:
        secs = ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items())
        result = "pass" if not r.problems else _grouped(r.problems)
        if r.note:
            result += f" ({r.note})"
        lines.append(f"| {r.entry.name} | {r.entry.family} | {r.entry.size} | {r.norms} | "
                     f"{'-' if r.layers is None else r.layers} | {r.compare} | {r.fix} | "
                     f"{r.corrupted} | {r.corrupted_fix} | {r.fold} | {r.instance_norm} | "
                     f"{r.batch_stats} | {secs} | {result} |")
    return "\n".join(lines)
