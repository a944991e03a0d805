"""Normalization an ONNX graph shows traces of but holds in no node bncheck can read.

An exporter may fold BatchNorm into the convolution before it, or write it as elementwise ops
and fold its statistics into constants; the layer is then gone from the graph, and an answer
about the rest of it ("no layer normalizes with running statistics: ok") would be wrong. Each
exporter leaves its own traces, and names its own way of keeping BatchNorm:

- torch's dynamo exporter (the default since torch 2.9) marks a Conv that absorbed a BatchNorm
  with the rewrite rule ``FuseBatchNormIntoConv`` and the module's class hierarchy;
- torch's TorchScript exporter gives a Conv it fused with a BatchNorm a new weight *and* a new
  bias, both named ``onnx::Conv_<n>`` (a plain Conv keeps its parameter names);
- tf2onnx keeps TensorFlow's op names, and ``tf.nn.batch_normalization`` (Keras 3's BatchNorm)
  names its ops ``<layer>/batchnorm/mul_1`` and ``<layer>/batchnorm/add_1``;
- any exporter may leave running statistics (``running_mean``, ``moving_variance``) as tensors
  that no normalization node reads.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from enum import StrEnum

import onnx

from bncheck.backends.names import is_statistic
from bncheck.backends.onnxrt.layers import NORM_OPS


class Exporter(StrEnum):
    """The tool that wrote an ONNX file, as far as the file says."""

    DYNAMO = "torch.onnx (dynamo)"
    TORCHSCRIPT = "torch.onnx (TorchScript)"
    TF2ONNX = "tf2onnx"
    OTHER = "another exporter"


KEEP_BN = {
    Exporter.DYNAMO: "export with torch.onnx.export(..., optimize=False), which keeps each "
                     "BatchNorm a BatchNormalization node, or give bncheck the PyTorch checkpoint",
    Exporter.TORCHSCRIPT: "export with torch.onnx.export(..., dynamo=False, "
                          "do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE), "
                          "or give bncheck the PyTorch checkpoint",
    Exporter.TF2ONNX: "give bncheck the SavedModel or .keras file it was converted from: bncheck "
                      "converts it keeping each BatchNorm",
    Exporter.OTHER: "export it with each BatchNorm kept a BatchNormalization node, or give "
                    "bncheck the framework's own model file",
}

_DYNAMO_KEY = "pkg.torch.onnx."
_TS_FOLDED = re.compile(r"^onnx::(Conv|ConvTranspose)_\d+$")
_TF_BATCHNORM = re.compile(r"^(?P<scope>.*?)/?batchnorm/(mul_1|add_1)$")


def exporter(proto: onnx.ModelProto) -> Exporter:
    """Who wrote ``proto``: read from ``producer_name`` and the metadata each exporter leaves."""
    producer = proto.producer_name.lower()
    if producer.startswith("tf2onnx") or producer.startswith("keras2onnx"):
        return Exporter.TF2ONNX
    if producer == "pytorch":
        dynamo = any(p.key.startswith(_DYNAMO_KEY) for n in proto.graph.node
                     for p in n.metadata_props)
        return Exporter.DYNAMO if dynamo else Exporter.TORCHSCRIPT
    return Exporter.OTHER


def hidden_norms(proto: onnx.ModelProto) -> tuple[str, ...]:
    """One sentence per kind of trace found, each ending with how to keep BatchNorm."""
    advice = KEEP_BN[exporter(proto)]
    found: list[str] = []
    dynamo = listed(_dynamo_folded(proto))
    if dynamo:
        found.append(f"the dynamo exporter folded BatchNorm {dynamo} into the convolutions "
                     f"(its default optimize=True), so their running statistics are gone: "
                     f"{advice}")
    torchscript = listed(_torchscript_folded(proto))
    if torchscript:
        found.append(f"the TorchScript exporter folded BatchNorm into the convolution(s) "
                     f"{torchscript} (their weights are named onnx::Conv_<n>), so those running "
                     f"statistics are gone: {advice}")
    tf_layers = _tf_decomposed(proto)
    if tf_layers:
        tf, were = listed(tf_layers), "were" if len(tf_layers) > 1 else "was"
        found.append(f"BatchNorm {tf} {were} written as elementwise ops whose running statistics "
                     f"were folded into constants (tf.nn.batch_normalization, as Keras 3 writes "
                     f"it): {advice}")
    loose = listed(sorted(_unread_statistics(proto)))
    if loose:
        found.append(f"the graph holds running statistics no normalization node reads "
                     f"({loose}): its BatchNorm is written in ops bncheck does not recognize; "
                     f"{advice}")
    return tuple(found)


def listed(names: Sequence[str], shown: int = 3) -> str:
    """"a, b, c and 2 more"."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def _dynamo_folded(proto: onnx.ModelProto) -> list[str]:
    """Modules whose BatchNorm the dynamo exporter's optimizer fused into a Conv."""
    out: list[str] = []
    for node in proto.graph.node:
        if node.op_type in NORM_OPS:
            continue
        props = {p.key: p.value for p in node.metadata_props}
        if "BatchNorm" not in props.get("pkg.onnxscript.rewriter.rule_name", "") and \
                "batchnorm" not in props.get("pkg.torch.onnx.class_hierarchy", "").lower():
            continue
        module = _module(props.get("pkg.torch.onnx.name_scopes", "")) or node.name
        if module not in out:
            out.append(module)
    return out


def _module(scopes: str) -> str | None:
    """The module path from the dynamo exporter's name scopes: "['', 'enc1', 'enc1.1', op]"."""
    try:
        names = ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return None
    return str(names[-2]) if isinstance(names, list) and len(names) >= 2 else None


def _torchscript_folded(proto: onnx.ModelProto) -> list[str]:
    if exporter(proto) is not Exporter.TORCHSCRIPT:
        return []
    inits = {t.name for t in proto.graph.initializer}
    return [n.name or n.output[0] for n in proto.graph.node
            if n.op_type in ("Conv", "ConvTranspose") and len(n.input) >= 3
            and all(i in inits and _TS_FOLDED.match(i) for i in n.input[1:3])]


def _tf_decomposed(proto: onnx.ModelProto) -> list[str]:
    out: list[str] = []
    for node in proto.graph.node:
        m = _TF_BATCHNORM.match(node.name)
        if m:
            layer = m["scope"].rsplit("/", 1)[-1] or node.name
            if layer not in out:
                out.append(layer)
    return out


def _unread_statistics(proto: onnx.ModelProto) -> set[str]:
    named = {t.name for t in proto.graph.initializer} | \
        {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return {name for name in named if is_statistic(name)} - _read_by_norms(proto.graph)


def _read_by_norms(graph: onnx.GraphProto) -> set[str]:
    """The tensors normalization nodes read, and those they reach through Identity chains."""
    identity = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    read: set[str] = set()
    for node in graph.node:
        if node.op_type not in NORM_OPS:
            continue
        for name in node.input:
            while name and name not in read:
                read.add(name)
                name = identity.get(name, "")
    return read
