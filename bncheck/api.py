"""The Python API: inspect, compare, rewrite and recalibrate, on paths or live objects.

Models are paths (every format the CLI reads), live ``torch.nn.Module`` objects or
``onnx.ModelProto`` objects. Data is a path (.npy, .npz, a torch.save'd tensor, an image folder),
an array, a tensor, a tuple of them (one per model input), a map-style Dataset, a DataLoader or
any iterable of batches. Inputs are never modified: live modules are copied. Nothing here
prints; long work reports to an optional ``progress`` object (see ``core.progress.Progress``).
The CLI is a thin caller of these functions.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bncheck.core.distributed.collective import Alone, Collective, agree_on_errors
from bncheck.core.inputs.data import ImageOptions, SampleSource, TensorReader, open_samples
from bncheck.core.inputs.imports import call_factory
from bncheck.core.inputs.sources import source_from_object
from bncheck.core.inspection import Inspection, inspect_model
from bncheck.core.judgement.findings import sort_findings
from bncheck.core.judgement.metrics import MetricKind, Truth, load_truth, truth_from_array
from bncheck.core.judgement.verdict import compare_findings, decide
from bncheck.core.network.formats import ModelFormat
from bncheck.core.network.model import InputSpec, Model
from bncheck.core.network.options import DEFAULT_BATCH_SIZE, Device, RewriteMode
from bncheck.core.passes.progress import Progress
from bncheck.core.passes.runner import Loader, serial_loader
from bncheck.core.results import Comparison
from bncheck.errors import BncheckError
from bncheck.extras import requires
from bncheck.rewriting.matrix import parse_modes
from bncheck.rewriting.run import Prepared, RewriteReport, prepare, write

PathLike = str | os.PathLike[str]
# A live model's stand-in path, for messages and for formats that need one.
LIVE_PATH = Path("<module>")

__all__ = ["ImageOptions", "Rewritten", "compare", "inspect", "load", "open_data", "recalibrate",
           "rewrite"]


@dataclass(frozen=True)
class Owned:
    """An ``nn.Module`` that is already bncheck's own copy (the training integrations make one
    that leaves out the trainer a LightningModule refers to): used as it is, not copied again."""

    module: Any


def load(model: Any, *, arch: str | None = None, allow_pickle: bool = False,
         device: Device | str = Device.CPU) -> Model:
    """A backend model for a path, an ``nn.Module`` (copied), a ``keras.Model`` (read, never
    changed), an ``onnx.ModelProto`` or an :class:`Owned` module."""
    device = Device(device)
    if isinstance(model, Owned):
        from bncheck.backends.pytorch.model import TorchModel, resolve_device

        return TorchModel(LIVE_PATH, ModelFormat.TORCH_SAVE, model.module.eval(), None,
                          resolve_device(device))
    if isinstance(model, (str, os.PathLike)):
        from bncheck.backends.base import load_model

        return load_model(Path(model), allow_pickle=allow_pickle, arch=arch, device=device)
    if hasattr(model, "graph") and hasattr(model, "SerializeToString"):
        import onnx

        from bncheck.backends.onnxrt.model import OnnxModel

        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return OnnxModel.of(proto, Path("<onnx.ModelProto>"), device)
    if _is_keras_model(model):
        from bncheck.backends.keras.model import KerasModel
        from bncheck.backends.keras.runtime import import_keras

        import_keras()  # refuses a Keras on another backend
        # Not copied: only its norm layers' values are read, into modules of bncheck's own.
        return KerasModel.of(Path("<keras.Model>"), ModelFormat.KERAS, model)
    if hasattr(model, "named_modules") and hasattr(model, "state_dict"):
        from bncheck.backends.pytorch.model import TorchModel, resolve_device

        module = copy.deepcopy(model).eval()
        return TorchModel(LIVE_PATH, ModelFormat.TORCH_SAVE, module, None, resolve_device(device))

    raise BncheckError(f"a model of type {type(model).__name__}: give a path, an nn.Module, "
                       "a keras.Model or an onnx.ModelProto")


def _is_keras_model(model: Any) -> bool:
    """A live keras.Model (checked without importing Keras: the caller already has)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)


def collective(device: Device | str = Device.CPU) -> Collective:
    """The processes of this job: several under torchrun, else this one alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Alone()
    from bncheck.backends.pytorch.distributed import TorchCollective

    return TorchCollective(Device(device))


def loader(src: SampleSource, workers: int) -> Loader:
    """Batches read in ``workers`` processes where that helps (images, datasets), else here."""
    from bncheck.core.inputs.data import ArraySource, Limited

    inner = src.inner if isinstance(src, Limited) else src
    if workers <= 0 or isinstance(inner, ArraySource):
        return serial_loader  # memory-mapped arrays: reading is already cheap
    from bncheck.backends.pytorch.loader import parallel_loader

    return parallel_loader(workers)


def _factory_data(data: Any) -> Any:
    """``package.module:factory`` (the --arch convention) called, for a path that is not one."""
    import re

    text = str(data)
    if not isinstance(data, (str, os.PathLike)) or Path(text).exists() or \
            not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        return data
    return call_factory(text, "--data")


def open_data(data: Any, model: Model, *, image: ImageOptions | None = None,
              limit: int | None = None, input_shape: tuple[int, ...] | None = None
              ) -> tuple[SampleSource, Model]:
    """A sample source matched to ``model``'s inputs, and the runnable form of the model.

    ``data`` may also name a ``package.module:factory`` that returns a Dataset or an iterable
    of batches. ``input_shape`` (per sample) stands in for what the model declares.
    """
    from bncheck.core.inputs.data import Limited

    data = _factory_data(data)
    specs = model.inputs()
    if input_shape is not None:
        if len(specs) > 1:
            raise BncheckError(f"--input-shape gives one input; {model.path} takes {len(specs)}")
        specs = [InputSpec(specs[0].name if specs else "input", (None, *input_shape),
                           channels_last=bool(specs) and specs[0].channels_last)]
    if isinstance(data, (str, os.PathLike)):
        src = open_samples(Path(data), input_names=[s.name for s in specs],
                           input_shapes=[s.shape for s in specs], image=image or ImageOptions(),
                           limit=limit, check_shapes=not any(s.guessed for s in specs),
                           read_torch=_torch_reader(),
                           channels_last=any(s.channels_last for s in specs))
    else:
        src = source_from_object(data, _tensor_to_numpy)
        if limit is not None:
            src = Limited(src, limit)
    if len(src) == 0:
        raise BncheckError("the data holds no samples")
    example = src.load(np.arange(min(2, len(src))))
    return src, model.runnable(example)


def _torch_reader() -> TensorReader:
    def read(path: Path) -> list[np.ndarray]:
        with requires(f"--data {path} (a torch.save'd tensor)", "torch"):
            from bncheck.backends.pytorch.data import read_tensor_file

            return read_tensor_file(path)

    return read


def _tensor_to_numpy(t: Any) -> np.ndarray:
    from bncheck.backends.pytorch.data import tensor_to_numpy

    return tensor_to_numpy(t, "data")


def truth_for(labels: Any, targets: Any, n_samples: int) -> Truth | None:
    """The task-metric truth from labels (class ids) or targets (expected outputs), or None."""

    if labels is not None and targets is not None:
        raise BncheckError("give --labels (class ids) or --targets (expected outputs), not both")
    for value, kind in ((labels, MetricKind.ACCURACY), (targets, MetricKind.MAE)):
        if value is None:
            continue
        if isinstance(value, (str, os.PathLike)):
            return load_truth(Path(value), kind, n_samples)
        arr = value if isinstance(value, np.ndarray) else _tensor_to_numpy(value)
        return truth_from_array(arr, kind, n_samples)
    return None


def inspect(model: Any, *, arch: str | None = None, allow_pickle: bool = False) -> Inspection:
    """The normalization layers of ``model`` and the problems visible from its weights alone."""
    return inspect_model(load(model, arch=arch, allow_pickle=allow_pickle))


def refuse_empty_layers(model: Model, command: str) -> None:
    """A normalization layer over zero channels has nothing to measure or rewrite, and makes
    every pass fail somewhere inside the runtime: refused in one sentence before any work."""
    empty = [layer.name for layer in model.layers() if layer.channels == 0]
    if empty:
        raise BncheckError(f"{model.path}: layer {empty[0]} normalizes 0 channels"
                           + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
                           + f", so there is nothing to {command}; remove it from the model "
                           "(bncheck inspect lists it)")


def refuse_hidden(model: Model, command: str) -> None:
    """A model with normalization bncheck cannot see gets no verdict and no rewrite: what
    was found, and what to give bncheck instead, in one sentence (see inspect for all)."""
    if model.hidden:
        raise BncheckError(f"{model.path}: cannot {command} it: {model.hidden[0]}")


def compare(model: Any, data: Any, *, train_batch_size: int | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, device: Device | str = Device.CPU,
            limit: int | None = None, labels: Any = None, targets: Any = None,
            image: ImageOptions | None = None, input_shape: tuple[int, ...] | None = None,
            arch: str | None = None, allow_pickle: bool = False, workers: int = 0,
            progress: Progress | None = None, converge: bool = True) -> Comparison:
    """Does eval mode behave as ``model`` did in training, on ``data``; what fixes it.

    ``labels`` (class ids) or ``targets`` (expected outputs), as arrays or files, add the task
    metric, and a fix that lowers it is never recommended. ``converge=False`` gathers the layer
    statistics over every sample instead of stopping once they have converged.
    """
    from bncheck.core.compare import compare as measure

    loaded = load(model, arch=arch, allow_pickle=allow_pickle, device=device)
    inspection = inspect_model(loaded)
    refuse_hidden(loaded, "compare")
    refuse_empty_layers(loaded, "compare")
    src, runnable = open_data(data, loaded, image=image, limit=limit, input_shape=input_shape)
    truth = truth_for(labels, targets, len(src))
    image_norm = None
    if image is not None and isinstance(data, (str, os.PathLike)) and Path(data).is_dir():
        image_norm = (image.mean, image.std)
    measured = measure(runnable, src, batch_size=batch_size, train_batch_size=train_batch_size,
                       truth=truth, image_norm=image_norm, progress=progress,
                       collective=collective(device), loader=loader(src, workers),
                       converge=converge)
    verdict = decide(measured)
    findings = sort_findings(inspection.findings + compare_findings(measured, verdict))
    return Comparison(inspection, measured, verdict, tuple(findings))


@dataclass(frozen=True)
class Rewritten:
    """A rewritten model, in memory; ``save`` writes and verifies it exactly as the CLI does."""

    prepared: Prepared

    @property
    def notes(self) -> dict[str, list[str]]:
        """What each pass did, by mode."""
        return {s.mode.value: s.notes for s in self.prepared.stages}

    @property
    def model(self) -> Model:
        """The rewritten backend model."""
        return self.prepared.stages[-1].after

    @property
    def module(self) -> Any:
        """The rewritten ``nn.Module`` (a torch model)."""
        return self._in_memory("module", "this model is ONNX: use .proto")

    @property
    def proto(self) -> Any:
        """The rewritten ``onnx.ModelProto`` (an ONNX model)."""
        return self._in_memory("proto", "this model is a torch module: use .module")

    def _in_memory(self, attr: str, otherwise: str) -> Any:
        value = getattr(self.model, attr, None)
        if value is None:
            raise BncheckError(otherwise)
        return value

    def save(self, path: PathLike, *, force: bool = False, keep_dropout: bool = False,
             force_worse: bool = False) -> RewriteReport:
        """Write ``path`` (format by suffix) atomically, only if it passes verification.

        Under torchrun every rank waits until all have finished, rank 0 alone writes, and every
        rank gets its outcome.
        """
        p = self.prepared
        c = p.collective
        if c.world == 1:
            return write(p, Path(path), force=force, keep_dropout=keep_dropout,
                         force_worse=force_worse)
        c.barrier()
        report, error = None, None
        if c.rank == 0:
            try:
                report = write(p, Path(path), force=force, keep_dropout=keep_dropout,
                               force_worse=force_worse)
            except BncheckError as e:
                error = str(e)
        agree_on_errors(c, error)
        written = c.gather(None if report is None else report.written)[0]
        return report or RewriteReport(p.source, Path(path), tuple(s.mode for s in p.stages),
                                       self.notes, (), p.verified_on, bool(written))


def rewrite(model: Any, mode: str | RewriteMode | Sequence[RewriteMode], *, data: Any = None,
            train_batch_size: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            device: Device | str = Device.CPU, limit: int | None = None, labels: Any = None,
            targets: Any = None, image: ImageOptions | None = None,
            input_shape: tuple[int, ...] | None = None, arch: str | None = None,
            allow_pickle: bool = False, workers: int = 0,
            progress: Progress | None = None) -> Rewritten:
    """Apply ``mode`` (``"recalibrate,fold"`` chains) to a copy of ``model``.

    recalibrate gathers its statistics as compare does, at the training batch size. The input
    is never modified; ``Rewritten.save`` writes the result.
    """

    modes = parse_modes(mode) if isinstance(mode, str) else \
        [RewriteMode(mode)] if isinstance(mode, RewriteMode) else list(mode)
    if data is None and RewriteMode.RECALIBRATE in modes:
        raise BncheckError("--mode recalibrate needs --data: statistics are re-estimated on it")
    if data is None and (labels is not None or targets is not None):
        raise BncheckError("--labels/--targets need --data: the metric is measured on it")
    loaded = load(model, arch=arch, allow_pickle=allow_pickle, device=device)
    refuse_hidden(loaded, "rewrite")
    refuse_empty_layers(loaded, "rewrite")
    src = truth = None
    if data is not None:
        src, loaded = open_data(data, loaded, image=image, limit=limit, input_shape=input_shape)
        truth = truth_for(labels, targets, len(src))
    name = str(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__
    return Rewritten(prepare(loaded, modes, src=src, source_name=name, batch_size=batch_size,
                             train_batch_size=train_batch_size, truth=truth,
                             input_shape=input_shape, arch=arch, progress=progress,
                             collective=collective(device),
                             loader=serial_loader if src is None else loader(src, workers)))


def recalibrate(module: Any, data: Any, *, train_batch_size: int | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None) -> Any:
    """A new ``nn.Module`` with exact float64 population statistics from ``data``.

    The replacement for ``torch.optim.swa_utils.update_bn``: normalization layers run on batch
    statistics at the training batch size (estimated when not given), dropout stays off, every
    sample counts equally, and ``module`` itself is left untouched.
    """
    return rewrite(module, RewriteMode.RECALIBRATE, data=data, train_batch_size=train_batch_size,
                   batch_size=batch_size, progress=progress).module
