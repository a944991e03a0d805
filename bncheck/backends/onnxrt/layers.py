"""Normalization layers of an ONNX graph, as backend-neutral NormLayers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from bncheck.backends.onnxrt.graph import Constants, attr
from bncheck.core.network.layers import Family, MomentumNote, NormLayer, momentum_from_onnx
from bncheck.core.network.numerics import DEFAULT_EPS
from bncheck.errors import BncheckError

NORM_OPS = {
    "BatchNormalization": Family.BATCH,
    "InstanceNormalization": Family.INSTANCE,
    "GroupNormalization": Family.GROUP,
    "LayerNormalization": Family.LAYER,
    "RMSNormalization": Family.RMS,
}


@dataclass(frozen=True)
class OnnxLayerRef:
    """Where a layer lives in the graph: its node and the tensor it normalizes."""

    name: str
    input: str


def layer_name(node: onnx.NodeProto, index: int) -> str:
    """A name that matches the torch module path when the export kept parameter names."""
    suffixes = (".weight", ".running_mean", ".bias", ".running_var")
    for inp in node.input[1:5]:
        for suf in suffixes:
            if inp.endswith(suf):
                return inp[: -len(suf)]
    # torch's exporter names nodes after the module scope: "/features/features.1/Op".
    parts = node.name.split("/")
    if node.name.startswith("/") and len(parts) >= 3 and parts[-2]:
        return parts[-2]
    return node.name or f"{node.op_type}_{index}"


def is_training_mode(node: onnx.NodeProto) -> bool:
    """A BatchNormalization that normalizes with batch statistics even at inference."""
    return node.op_type == "BatchNormalization" and bool(attr(node, "training_mode", 0))


def nested_norms(model: onnx.ModelProto) -> int:
    """Normalization nodes inside If/Loop/Scan subgraphs (not analysed or rewritten)."""
    def count(graph: onnx.GraphProto, top: bool) -> int:
        n = 0 if top else sum(1 for node in graph.node if node.op_type in NORM_OPS)
        for node in graph.node:
            for a in node.attribute:
                subgraphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
                n += sum(count(g, False) for g in subgraphs)
        return n
    return count(model.graph, True)


def discover(model: onnx.ModelProto) -> tuple[list[NormLayer], list[OnnxLayerRef]]:
    """Every normalization node in graph order, with parameters resolved to arrays."""
    consts = Constants(model.graph)
    layers: list[NormLayer] = []
    refs: list[OnnxLayerRef] = []
    for i, node in enumerate(model.graph.node):
        family = NORM_OPS.get(node.op_type)
        if family is None:
            continue
        name = layer_name(node, i)
        layers.append(_describe(node, name, family, consts))
        refs.append(OnnxLayerRef(name, node.input[0]))
    return layers, refs


def _arr(consts: Constants, node: onnx.NodeProto, i: int) -> np.ndarray | None:
    if len(node.input) <= i or not node.input[i]:
        return None
    v = consts.value(node.input[i])
    return None if v is None else np.asarray(v, dtype=np.float64).reshape(-1)


def _same_length(name: str, **params: np.ndarray | None) -> None:
    """Per-channel parameters of one layer must agree on the channel count."""
    sizes = {k: v.size for k, v in params.items() if v is not None}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k} {n}" for k, n in sizes.items())
        raise BncheckError(f"layer {name}: its parameters disagree on the number of channels "
                           f"({listed}); the graph is malformed, export it again")


def _describe(node: onnx.NodeProto, name: str, family: Family, consts: Constants) -> NormLayer:
    eps = float(attr(node, "epsilon", DEFAULT_EPS) or 0.0)
    weight, bias = _arr(consts, node, 1), _arr(consts, node, 2)
    if family is Family.BATCH:
        m = float(attr(node, "momentum", 0.9) or 0.0)
        rm, rv = _arr(consts, node, 3), _arr(consts, node, 4)
        _same_length(name, scale=weight, bias=bias, running_mean=rm, running_var=rv)
        training = is_training_mode(node)
        return NormLayer(
            name=name, kind=node.op_type, family=family,
            channels=None if weight is None else int(weight.size),
            eps=eps, momentum=momentum_from_onnx(m), momentum_note=MomentumNote.ONNX,
            affine=True, tracks_running_stats=not training,
            running_mean=rm, running_var=rv, weight=weight, bias=bias, training_mode=training,
        )
    channels = int(attr(node, "num_groups", 0) or 0) if family is Family.GROUP else None
    if channels is None and weight is not None:
        channels = int(weight.size)
    return NormLayer(
        name=name, kind=node.op_type, family=family, channels=channels, eps=eps,
        momentum=None, momentum_note=MomentumNote.NONE, affine=weight is not None,
        tracks_running_stats=False, weight=weight, bias=bias,
    )
