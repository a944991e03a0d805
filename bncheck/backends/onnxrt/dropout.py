"""Test-time dropout in an ONNX graph (pix2pix draws varied outputs from it), in plain ops.

onnxruntime's default graph optimizations remove a Dropout node even when its training_mode is
on, so a file meant to keep dropout active would silently lose it. Each Dropout is written
instead as ``x * (RandomUniformLike(x) > ratio) / (1 - ratio)``, which no optimizer folds.
The nodes of one such group share a name prefix, so verification can switch them off again.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bncheck.backends.onnxrt.graph import Constants, declare_initializers, opset
from bncheck.errors import BncheckError

PREFIX = "bncheck.dropout"
CASTLIKE_OPSET = 15
# Dropout's ratio when the node does not give one (the ONNX default).
DEFAULT_RATIO = 0.5


def dropout_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the graph's Dropout nodes."""
    return [n.name or f"Dropout_{i}" for i, n in enumerate(proto.graph.node)
            if n.op_type == "Dropout"]


def has_active_dropout(proto: onnx.ModelProto) -> bool:
    """Whether bncheck wrote active dropout into this graph (its outputs are random)."""
    return any(n.name.startswith(PREFIX) and n.name.endswith("/Apply") for n in proto.graph.node)


def activate_dropout(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose Dropout nodes drop at inference, in ops no optimizer removes."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    consts = Constants(out.graph)
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(out.graph.node):
        if node.op_type != "Dropout":
            nodes.append(node)
            continue
        ratio = DEFAULT_RATIO
        if len(node.input) > 1 and node.input[1]:
            value = consts.value(node.input[1])
            if value is None:
                raise BncheckError(f"--keep-dropout: the ratio of Dropout node {node.name!r} is "
                                   "computed at run time; bncheck needs it constant")
            ratio = float(np.asarray(value).reshape(-1)[0])
        p = node.name[: -len("/Dropout")] if node.name.startswith(PREFIX) else f"{PREFIX}.{i}"
        nodes.extend(_group(p, node.input[0], node.output[0], ratio, out))
        # A second output (the mask) is not part of any inference graph bncheck writes.
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    declare_initializers(out)
    return out


def _group(p: str, x: str, y: str, ratio: float, model: onnx.ModelProto) -> list[onnx.NodeProto]:
    if not 0.0 <= ratio < 1.0:
        raise BncheckError(f"--keep-dropout: a Dropout ratio of {ratio} keeps nothing")
    existing = {t.name for t in model.graph.initializer}
    model.graph.initializer.extend(
        numpy_helper.from_array(np.array(v, np.float32), name)
        for name, v in ((f"{p}.ratio", ratio), (f"{p}.scale", 1.0 / (1.0 - ratio)))
        if name not in existing)
    # The mask is built in float32 and cast to x's type where the opset can (CastLike, 15).
    cast = [helper.make_node("CastLike", [f"{p}.mask32", x], [f"{p}.mask"], name=f"{p}/CastLike")] \
        if opset(model) >= CASTLIKE_OPSET else []
    mask = f"{p}.mask" if cast else f"{p}.mask32"
    return [
        helper.make_node("RandomUniformLike", [x], [f"{p}.u"], name=f"{p}/RandomUniformLike",
                         dtype=onnx.TensorProto.FLOAT),
        helper.make_node("Greater", [f"{p}.u", f"{p}.ratio"], [f"{p}.keep"], name=f"{p}/Greater"),
        helper.make_node("Cast", [f"{p}.keep"], [f"{p}.keepf"], name=f"{p}/Cast",
                         to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [f"{p}.keepf", f"{p}.scale"], [f"{p}.mask32"], name=f"{p}/Scale"),
        *cast,
        helper.make_node("Mul", [x, mask], [y], name=f"{p}/Apply"),
    ]


def deactivate_dropout(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` with bncheck's dropout groups back as inference Dropout nodes (a
    pass-through that ``activate_dropout`` turns into a group again)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        if not node.name.startswith(PREFIX):
            nodes.append(node)
        elif node.name.endswith("/Apply"):
            p = node.name[: -len("/Apply")]
            nodes.append(helper.make_node("Dropout", [node.input[0], f"{p}.ratio"],
                                          [node.output[0]], name=f"{p}/Dropout"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
