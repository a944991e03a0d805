"""BatchNorm written as elementwise ops (``tf.nn.batch_normalization``), fused back into one op.

Keras 3 writes an inference BatchNormalization as ``tf.nn.batch_normalization`` does::

    k = Rsqrt(moving_variance + eps) * gamma;  y = x * k + (beta - moving_mean * k)

Frozen and constant-folded, ``k`` and ``beta - moving_mean * k`` become two constants and the
running statistics are gone; bncheck would see no normalization layer at all. So before any
folding, each such group whose statistics are constants becomes one ``FusedBatchNormV3`` with
``is_training=False``: the same function, which tf2onnx converts to a BatchNormalization node.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

_ADD = ("Add", "AddV2")
_FLOAT = 1  # DT_FLOAT: FusedBatchNormV3 here runs float32, as Keras exports it
# The ops a frozen variable read leaves between a Const and its use.
_PASS_THROUGH = ("Identity", "ReadVariableOp", "Cast")


@dataclass(frozen=True)
class _Group:
    """One decomposed BatchNorm: its input, parameters, and the ops it replaces."""

    x: str
    mean: str
    var: str
    gamma: str | None
    beta: str | None
    eps: float
    channels: int
    out: Any  # the final Add node, whose name its consumers read
    ops: tuple[str, ...]  # every op of the group, the final Add included


def fuse(tf: Any, graph_def: Any, keras_momentum: float | None = None) -> list[str]:
    """Replace each decomposed BatchNorm in ``graph_def`` (in place); the new ops' names.

    ``keras_momentum`` (Keras' convention) is recorded on the fused ops when the graph came
    from Keras, which does not write the momentum into its exports.
    """
    nodes = {n.name: n for n in graph_def.node}
    users: dict[str, list[Any]] = defaultdict(list)
    for n in graph_def.node:
        for i in n.input:
            if not i.startswith("^"):
                users[i.split(":")[0]].append(n)
    groups = [g for n in graph_def.node if n.op == "Rsqrt"
              if (g := _match(tf, n, nodes, users)) is not None]
    if groups:
        ranks = _ranks(tf, graph_def)
        groups = [g for g in groups if ranks(g.x) == 4]
    fused: list[str] = []
    for g in groups:
        fused.append(_replace(tf, graph_def, g, keras_momentum))
    drop = {op for g in groups for op in g.ops}
    keep = [n for n in graph_def.node if n.name not in drop]
    del graph_def.node[:]
    graph_def.node.extend(keep)
    return fused


def _const(tf: Any, name: str, nodes: dict[str, Any]) -> np.ndarray | None:
    node = nodes.get(name.split(":")[0].lstrip("^"))
    while node is not None and node.op in _PASS_THROUGH and node.input:
        node = nodes.get(node.input[0].split(":")[0])
    if node is None or node.op != "Const":
        return None
    return np.asarray(tf.make_ndarray(node.attr["value"].tensor))


def _negated(name: str, nodes: dict[str, Any]) -> str | None:
    """The input of ``name`` when a Neg makes it (``-mean``), else None."""
    node = nodes.get(name.split(":")[0])
    return node.input[0] if node is not None and node.op == "Neg" else None


def _other(node: Any, name: str) -> str | None:
    """The operand of binary ``node`` that is not ``name``."""
    ins = [i for i in node.input if not i.startswith("^")]
    if len(ins) != 2:
        return None
    a, b = (i.split(":")[0] for i in ins)
    return ins[1] if a == name else ins[0] if b == name else None


def _only_user(users: dict[str, list[Any]], name: str) -> Any:
    """The one op that reads ``name``, or None."""
    found = users.get(name, [])
    return found[0] if len(found) == 1 else None


def _ranks(tf: Any, graph_def: Any) -> Any:
    """A tensor's rank, from TensorFlow's shape inference over the whole graph.

    FusedBatchNormV3 takes NHWC images: a decomposed BatchNorm over another rank stays
    unfused, and is then reported as statistics bncheck did not map.
    """
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")

    def rank(tensor: str) -> int | None:
        name = tensor if ":" in tensor else f"{tensor}:0"
        return graph.get_tensor_by_name(name).shape.rank
    return rank


def _match(tf: Any, rsqrt: Any, nodes: dict[str, Any],
           users: dict[str, list[Any]]) -> _Group | None:
    add = nodes.get(rsqrt.input[0].split(":")[0])
    if add is None or add.op not in _ADD:
        return None
    var_name = eps = None
    for i, j in ((0, 1), (1, 0)):
        v, e = _const(tf, add.input[i], nodes), _const(tf, add.input[j], nodes)
        if v is not None and e is not None and v.ndim == 1 and e.size == 1:
            var_name, eps = add.input[i], float(e.reshape(-1)[0])
    if var_name is None or eps is None or _only_user(users, add.name) is not rsqrt:
        return None
    k, gamma, ops = rsqrt, None, [add.name, rsqrt.name]
    scaled = _only_user(users, rsqrt.name)
    if scaled is not None and scaled.op == "Mul":
        gamma = _other(scaled, rsqrt.name)
        if gamma is None or _const(tf, gamma, nodes) is None:
            return None
        k = scaled
        ops.append(k.name)
    muls = users.get(k.name, [])
    if len(muls) != 2 or any(m.op != "Mul" for m in muls):
        return None
    # x * k, and mean * k: the mean a constant, or negated (-mean * k) when there is no beta.
    operands = {m.name: _other(m, k.name) for m in muls}
    negated = {name: _negated(str(o), nodes) for name, o in operands.items()}
    mul_mean, mul_x = sorted(muls, key=lambda m: _const(
        tf, negated[m.name] or str(operands[m.name]), nodes) is None)
    mean, x = negated[mul_mean.name] or operands[mul_mean.name], operands[mul_x.name]
    mean_value = None if mean is None else _const(tf, mean, nodes)
    if mean is None or x is None or mean_value is None or _const(tf, x, nodes) is not None:
        return None
    shift, beta = mul_mean, None
    if negated[mul_mean.name] is not None:
        neg = str(operands[mul_mean.name]).split(":")[0]
        if _only_user(users, neg) is not mul_mean:
            return None
        ops.append(neg)
    else:
        shift = _only_user(users, mul_mean.name)
        if shift is None or shift.op != "Sub" or \
                shift.input[1].split(":")[0] != mul_mean.name or \
                _const(tf, shift.input[0], nodes) is None:
            return None
        beta = shift.input[0]
    out = _only_user(users, shift.name)
    if out is None or out.op not in _ADD or _only_user(users, mul_x.name) is not out:
        return None
    if mul_x.attr["T"].type != _FLOAT:
        return None
    ops += list(dict.fromkeys([mul_mean.name, mul_x.name, shift.name, out.name]))
    return _Group(x, mean, var_name, gamma, beta, eps, int(mean_value.size), out, tuple(ops))


def _replace(tf: Any, graph_def: Any, g: _Group, keras_momentum: float | None) -> str:
    scope = g.out.name.rpartition("/")[0] or g.out.name
    name = f"{scope}/FusedBatchNormV3"
    gamma = g.gamma or _add_const(tf, graph_def, f"{scope}/bncheck_ones", np.ones(g.channels))
    beta = g.beta or _add_const(tf, graph_def, f"{scope}/bncheck_zeros", np.zeros(g.channels))
    node = graph_def.node.add()
    node.name, node.op = name, "FusedBatchNormV3"
    node.input.extend([g.x, gamma, beta, g.mean, g.var])
    node.attr["T"].type = node.attr["U"].type = _FLOAT
    node.attr["epsilon"].f = g.eps
    node.attr["data_format"].s = b"NHWC"
    node.attr["is_training"].b = False
    if keras_momentum is not None:
        node.attr["exponential_avg_factor"].f = 1.0 - keras_momentum
    for n in graph_def.node:
        for i, inp in enumerate(n.input):
            if inp in (g.out.name, f"{g.out.name}:0"):
                n.input[i] = name
            elif inp == f"^{g.out.name}":
                n.input[i] = f"^{name}"
    return name


def _add_const(tf: Any, graph_def: Any, name: str, value: np.ndarray) -> str:
    node = graph_def.node.add()
    node.name, node.op = name, "Const"
    node.attr["dtype"].type = _FLOAT
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(np.float32)))
    return name
