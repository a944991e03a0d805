"""Which running statistics a TensorFlow graph holds, and which BatchNorm op reads each.

A SavedModel names its variables after the user's layers ("enc2_bn/moving_mean"), while its
frozen graph reads them through anonymous constants ("unknown_4"); a frozen ``.pb`` or a TF1
checkpoint keeps the names on the constants. Each fused BatchNorm op is matched to its layer by
the values it reads (or by its scope), so findings name the user's layer; statistics that no op
reads are what bncheck could not map, and compare refuses to call such a model healthy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bncheck.backends.names import MEAN as _MEAN
from bncheck.backends.names import is_statistic

FUSED = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")


@dataclass
class GraphStatistics:
    """Running statistics found in a graph, and the layer each fused op was matched to."""

    named: dict[str, np.ndarray] = field(default_factory=dict)  # statistic name -> value
    layers: dict[str, str] = field(default_factory=dict)  # fused op -> user layer
    rebuilt: list[str] = field(default_factory=list)  # fused ops bncheck made of elementwise ops

    def unmapped(self) -> list[str]:
        """Layers whose running statistics no BatchNorm op reads, by name."""
        mapped = set(self.layers.values())
        out: list[str] = []
        for name in self.named:
            m = _MEAN.match(name)
            if m and m["layer"] not in mapped and m["layer"] not in out:
                out.append(m["layer"])
        return out


def layer_of(op_name: str) -> str:
    """The scope of a fused op: "enc2/batchnorm/FusedBatchNormV3" -> "enc2/batchnorm"."""
    scope, _, last = op_name.rpartition("/")
    return scope if scope and last.startswith("FusedBatchNorm") else op_name


def named_constants(tf: Any, graph_def: Any) -> dict[str, np.ndarray]:
    """The constants of ``graph_def`` named like running statistics (frozen variables)."""
    return {n.name: np.asarray(tf.make_ndarray(n.attr["value"].tensor)) for n in graph_def.node
            if n.op == "Const" and is_statistic(n.name)}


def match_layers(tf: Any, graph_def: Any, stats: GraphStatistics) -> None:
    """Name each fused op of ``graph_def`` after the layer whose running mean it reads."""
    nodes = {n.name: n for n in graph_def.node}
    means = {m["layer"]: value for name, value in stats.named.items()
             if (m := _MEAN.match(name))}
    for node in graph_def.node:
        if node.op not in FUSED or len(node.input) < 4:
            continue
        scope = layer_of(node.name)
        mean = _resolve(tf, node.input[3], nodes)
        same = [layer for layer, value in means.items() if mean is not None
                and value.shape == mean.shape and np.array_equal(value, mean)]
        stats.layers[node.name] = same[0] if len(same) == 1 else \
            scope if scope in means or not same else _closest(scope, same)


def _closest(scope: str, candidates: list[str]) -> str:
    """Of layers with equal statistics, the one the op's scope names ("enc2_bn_1" reads
    "enc2_bn"); TensorFlow suffixes a scope entered twice."""
    for layer in candidates:
        if re.search(rf"(^|/){re.escape(layer)}(_\d+)?(/|$)", scope):
            return layer
    return candidates[0]


def _resolve(tf: Any, name: str, nodes: dict[str, Any]) -> np.ndarray | None:
    node = nodes.get(name.split(":")[0])
    while node is not None and node.op in ("Identity", "ReadVariableOp") and node.input:
        node = nodes.get(node.input[0].split(":")[0])
    if node is None or node.op != "Const":
        return None
    return np.asarray(tf.make_ndarray(node.attr["value"].tensor))
