"""A frozen TensorFlow graph as ONNX, with every FusedBatchNorm kept a BatchNormalization.

tf2onnx's back-to-back optimizer folds a BatchNormalization into the convolution before it, and
a FusedBatchNorm with ``is_training=True`` becomes reduce ops around a statistics-free BN; either
way bncheck would see no normalization layer. So the training-mode ops are first switched to
inference (their moving statistics as the mean and variance), the folding optimizer is left out,
and each BN's parameters are renamed after the TensorFlow op, so findings name the user's layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bncheck.backends.onnxrt.graph import EXPORT_OPSET
from bncheck.backends.tensorflow.graphs import FrozenGraph
from bncheck.backends.tensorflow.statistics import FUSED as _FUSED
from bncheck.backends.tensorflow.statistics import layer_of
from bncheck.errors import BncheckError

_FOLDS_BN = "remove_back_to_back"


@dataclass(frozen=True)
class Converted:
    """The ONNX model and what the TensorFlow graph did that the ONNX form does not show."""

    proto: Any
    training: frozenset[str]  # layers the graph ran with is_training=True
    tf_norms: int  # FusedBatchNorm ops in the TensorFlow graph, those bncheck rebuilt included
    rebuilt: tuple[str, ...]  # layers bncheck fused back from elementwise ops
    unmapped: tuple[str, ...]  # layers whose running statistics no BatchNorm op reads


def to_onnx(tf: Any, frozen: FrozenGraph) -> Converted:
    """Convert ``frozen``; BncheckError when tf2onnx cannot."""
    from tf2onnx import optimizer, tfonnx

    graph_def = tf.compat.v1.GraphDef()
    graph_def.CopyFrom(frozen.graph_def)
    training = _to_inference(graph_def)
    momenta = {**_momenta(graph_def), **training}
    norms = [n.name for n in graph_def.node if n.op in _FUSED]
    names = {n: frozen.stats.layers.get(n, layer_of(n)) for n in norms}
    try:
        with tf.Graph().as_default() as graph:
            tf.import_graph_def(graph_def, name="")
            onnx_graph = tfonnx.process_tf_graph(tf_graph=graph, input_names=frozen.inputs,
                                                 output_names=frozen.outputs, opset=EXPORT_OPSET)
        passes = {k: v for k, v in optimizer._get_optimizers().items() if k != _FOLDS_BN}
        onnx_graph = optimizer.optimize_graph(onnx_graph, optimizers=passes)
        proto = onnx_graph.make_model("bncheck: converted by tf2onnx")
    except Exception as e:  # tf2onnx raises many types for ops it does not support
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise BncheckError(f"tf2onnx cannot convert this graph ({first})") from e
    _name_parameters(proto, names, momenta)
    return Converted(proto, frozenset(names[n] for n in training), len(norms),
                     tuple(names[n] for n in frozen.stats.rebuilt if n in names),
                     tuple(frozen.stats.unmapped()))


def _momenta(graph_def: Any) -> dict[str, float | None]:
    """The momentum (``exponential_avg_factor``) each inference-mode fused op records."""
    return {n.name: n.attr["exponential_avg_factor"].f for n in graph_def.node
            if n.op in _FUSED and "exponential_avg_factor" in n.attr
            and 0.0 < n.attr["exponential_avg_factor"].f < 1.0}


def _to_inference(graph_def: Any) -> dict[str, float | None]:
    """Switch each training-mode FusedBatchNorm to inference; returns them with their torch
    momentum (from ``exponential_avg_factor``, None where the graph does not say)."""
    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    out: dict[str, float | None] = {}
    for node in graph_def.node:
        if node.op not in _FUSED or not node.attr["is_training"].b:
            continue
        node.attr["is_training"].b = False
        factor = node.attr["exponential_avg_factor"].f if "exponential_avg_factor" in node.attr \
            else 1.0
        out[node.name] = factor if 0.0 < factor < 1.0 else None
        # TF1's batch_norm passes empty mean/variance in training; the moving averages are
        # variables beside the op ("scope/moving_mean"), updated by separate assign ops.
        for slot, stat in ((3, "moving_mean"), (4, "moving_variance")):
            source = consts.get(node.input[slot].split(":")[0])
            if source is None or not _is_empty(source):
                continue  # the statistics themselves (a constant, or read from a variable)
            moving = consts.get(f"{layer_of(node.name)}/{stat}")
            if moving is None:
                raise BncheckError(f"{layer_of(node.name)}: runs with is_training=True and the "
                                   f"graph holds no {stat} for it; freeze the graph with its "
                                   "moving averages")
            node.input[slot] = moving.name
    return out


def _is_empty(const: Any) -> bool:
    return any(d.size == 0 for d in const.attr["value"].tensor.tensor_shape.dim)


def _name_parameters(proto: Any, names: dict[str, str], momenta: dict[str, float | None]) -> None:
    """Name each BN's parameters after its TensorFlow layer ("enc2/batchnorm.running_mean"),
    as the ONNX backend reads names, and give it the momentum the graph trained with."""
    import onnx
    from onnx import numpy_helper

    from bncheck.backends.onnxrt.graph import set_attr

    inits = {t.name: t for t in proto.graph.initializer}
    named: set[str] = set()
    for node in proto.graph.node:
        # tf2onnx names each node after the TensorFlow op it converts.
        if node.op_type != "BatchNormalization" or node.name not in names:
            continue
        layer = names[node.name]
        for slot, suffix in enumerate((".weight", ".bias", ".running_mean", ".running_var"), 1):
            old = node.input[slot]
            if old not in inits:
                continue
            new = layer + suffix
            if new not in named:
                copy = numpy_helper.from_array(np.array(numpy_helper.to_array(inits[old])), new)
                proto.graph.initializer.append(copy)
                named.add(new)
            node.input[slot] = new
        momentum = momenta.get(node.name)
        if momentum is not None:
            set_attr(node, "momentum", 1.0 - momentum)
    used = {i for n in proto.graph.node for i in n.input}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    onnx.checker.check_model(proto)
