"""Reading TensorFlow graphs: a SavedModel folder, a frozen ``.pb``, a TF1 checkpoint's ``.meta``.

Each becomes a frozen GraphDef with its input and output tensor names.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bncheck.backends.tensorflow.decomposed import fuse
from bncheck.backends.tensorflow.statistics import (
    GraphStatistics,
    is_statistic,
    match_layers,
    named_constants,
)
from bncheck.core.network.formats import ModelFormat
from bncheck.errors import BncheckError, raised_by_bncheck, reading, reason

EXTRA = "pip install 'bncheck[tensorflow]'"
# Ops that end a graph without being its result: savers, initializers, training updates.
_NOT_OUTPUTS = {"NoOp", "Assign", "AssignVariableOp", "AssignSubVariableOp", "SaveV2",
                "RestoreV2", "VarHandleOp", "VariableV2", "Const", "Placeholder", "MergeV2Checkpoints",
                "ShardedFilename", "StringJoin", "VarIsInitializedOp"}

# The ops tf.compat.v1.train.Saver and global_variables_initializer add ("save_1/...", "init").
_SAVER = re.compile(r"^(save(_\d+)?/|init(_\d+)?$)")


@dataclass(frozen=True)
class FrozenGraph:
    """A GraphDef with every variable a constant, and the tensors it takes and returns."""

    graph_def: Any
    inputs: list[str]  # "image:0"
    outputs: list[str]
    stats: GraphStatistics = field(default_factory=GraphStatistics)


def import_tensorflow() -> tuple[ModuleType, ModuleType]:
    """TensorFlow and tf2onnx, quietly; a BncheckError naming the extra when either is missing."""
    # TensorFlow's start-up log lines are noise here; bncheck runs no TensorFlow kernel that
    # oneDNN would speed up (onnxruntime runs the graph).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        with redirect_stderr(io.StringIO()):
            import tensorflow as tf
            import tf2onnx
    except ImportError as e:
        raise BncheckError(f"TensorFlow graphs need TensorFlow and tf2onnx: {EXTRA}") from e
    tf.get_logger().setLevel("ERROR")
    return tf, tf2onnx


def checkpoint_meta(path: Path) -> Path:
    """The ``.meta`` graph of a TF1 checkpoint given as its ``.meta``, ``.index`` or prefix."""
    if path.suffix == ".meta":
        return path
    prefix = path.with_suffix("") if path.suffix == ".index" else path
    meta = prefix.with_name(prefix.name + ".meta")
    if not meta.exists():
        raise BncheckError(f"{path} is a TensorFlow checkpoint without its graph ({meta.name} is "
                           "missing): bncheck needs the .meta file that tf.compat.v1.train.Saver "
                           "writes beside it")
    return meta


def read_graph(path: Path, fmt: ModelFormat) -> FrozenGraph:
    """The frozen graph in ``path``; one sentence when it cannot be read."""
    tf, _ = import_tensorflow()
    from tf2onnx import tf_loader

    quiet = io.StringIO()
    stats = GraphStatistics()
    try:
        with redirect_stdout(quiet), redirect_stderr(quiet), _fusing(tf, tf_loader, stats):
            if fmt is ModelFormat.TF_SAVED_MODEL:
                return _saved_model(tf, tf_loader, path, stats)
            if fmt is ModelFormat.TF_CHECKPOINT:
                meta = checkpoint_meta(path)
                graph_def = _meta_graph(tf, meta)
                inputs, outputs = _ends(graph_def)
                frozen, inputs, outputs = tf_loader.from_checkpoint(str(meta), inputs, outputs)
                match_layers(tf, frozen, stats)
                return FrozenGraph(frozen, inputs, outputs, stats)
    except BncheckError:
        raise
    except Exception as e:  # TensorFlow raises many types for damaged or unusual files
        if raised_by_bncheck(e):
            raise
        raise BncheckError(f"{path}: TensorFlow cannot read it ({reason(e)})") from e
    graph_def = tf.compat.v1.GraphDef()
    with reading(path, "a TensorFlow graph (a frozen GraphDef .pb)"):
        graph_def.ParseFromString(path.read_bytes())
    if not graph_def.node:
        raise BncheckError(f"{path} is not a TensorFlow graph: it holds no nodes")
    inputs, outputs = _ends(graph_def)
    _rebuild(tf, graph_def, stats)
    match_layers(tf, graph_def, stats)
    return FrozenGraph(graph_def, inputs, outputs, stats)


# Keras' default BatchNormalization momentum (its convention: the old average's weight). Keras
# exports do not record a layer's momentum, and a decomposed BatchNorm comes from Keras.
KERAS_DEFAULT_MOMENTUM = 0.99


def _rebuild(tf: Any, graph_def: Any, stats: GraphStatistics) -> None:
    """Fuse the decomposed BatchNorms of ``graph_def`` and note its named statistics."""
    stats.named.update(named_constants(tf, graph_def))
    stats.rebuilt += fuse(tf, graph_def, KERAS_DEFAULT_MOMENTUM)


@contextmanager
def _fusing(tf: Any, tf_loader: Any, stats: GraphStatistics) -> Iterator[None]:
    """tf2onnx's loaders freeze a graph and then constant-fold it, which folds a decomposed
    BatchNorm's statistics away; its folding step is wrapped so that they are fused first."""
    original = tf_loader.tf_optimize

    def optimize(inputs: list[str], outputs: list[str], graph_def: Any) -> Any:
        _rebuild(tf, graph_def, stats)
        return original(inputs, outputs, graph_def)

    tf_loader.tf_optimize = optimize
    try:
        yield
    finally:
        tf_loader.tf_optimize = original


def _saved_model(tf: Any, tf_loader: Any, path: Path, stats: GraphStatistics) -> FrozenGraph:
    try:
        frozen, inputs, outputs, _, imported = tf_loader.from_saved_model(
            str(path), None, None, return_concrete_func=True)[:5]
    except (ValueError, KeyError, IndexError) as e:
        if "signature" in str(e).lower() or isinstance(e, (KeyError, IndexError)):
            raise BncheckError(f"{path}: the SavedModel has no serving signature, so its inputs "
                               "and outputs are unknown; save it with a signature "
                               "(tf.saved_model.save(model, path, signatures=...))") from e
        raise
    if not inputs or not outputs:
        raise BncheckError(f"{path}: the SavedModel has no serving signature, so its inputs and "
                           "outputs are unknown; save it with a signature")
    # A TF2 SavedModel's frozen constants are anonymous; its variables keep the layer names.
    for v in tf.train.TrackableView(imported).descendants():
        if isinstance(v, tf.Variable) and is_statistic(v.name):
            stats.named[v.name.split(":")[0]] = np.asarray(v.numpy())
    match_layers(tf, frozen, stats)
    return FrozenGraph(frozen, list(inputs), list(outputs), stats)


def _meta_graph(tf: Any, meta: Path) -> Any:
    proto = tf.compat.v1.MetaGraphDef()
    proto.ParseFromString(meta.read_bytes())
    return proto.graph_def


def _ends(graph_def: Any) -> tuple[list[str], list[str]]:
    """Placeholders in, and the tensors no other op reads out (training updates aside)."""
    consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    inputs = [f"{n.name}:0" for n in graph_def.node if n.op == "Placeholder"]
    outputs = [f"{n.name}:0" for n in graph_def.node
               if n.name not in consumed and n.op not in _NOT_OUTPUTS
               and not _SAVER.match(n.name) and "FusedBatchNorm" not in n.op]
    if not inputs or not outputs:
        raise BncheckError("the graph has no placeholder input or no output op bncheck can find")
    return inputs, outputs

