"""BatchNorm written as elementwise ONNX ops, with its statistics still constants, made one node.

A hand-written BatchNorm, or an exporter that lowers it, gives::

    y = (x - mean) / Sqrt(var + eps) * gamma + beta

or an algebraic variant: a multiplication by ``Reciprocal(Sqrt(var + eps))`` or by
``Pow(var + eps, -0.5)`` instead of the division, gamma before the division, no gamma or beta.
While ``mean`` and ``var`` are constants (initializers or Constant nodes) of one value per
channel, the group is one BatchNormalization node computing the same function, and bncheck
reads, measures and rewrites it as any other. ``(x - mean) / std`` with ``std`` a bare constant
is not taken: it is how exports write input normalization, not BatchNorm.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bncheck.backends.names import MEAN
from bncheck.backends.onnxrt.graph import Constants, attr, static_shapes

# Ops that only reshape a constant: a parameter reshaped to broadcast over channels.
_RESHAPES = ("Unsqueeze", "Reshape", "Squeeze")


@dataclass
class _Group:
    """One decomposed BatchNorm as it is matched: its constants and the nodes it replaces."""

    x: str
    mean: np.ndarray
    mean_name: str
    var: np.ndarray = field(default_factory=lambda: np.empty(0))  # empty until found
    eps: float = 0.0
    gamma: np.ndarray | None = None
    beta: np.ndarray | None = None
    out: str = ""
    nodes: list[onnx.NodeProto] = field(default_factory=list)


@dataclass(frozen=True)
class _Graph:
    """What matching asks of the graph: constants, each tensor's producer and readers."""

    consts: Constants
    producer: dict[str, onnx.NodeProto]
    users: dict[str, list[onnx.NodeProto]]
    outputs: set[str]

    def value(self, name: str) -> np.ndarray | None:
        """A constant, or one reshaped at run time (``Unsqueeze`` of an initializer, as an
        export without constant folding writes ``running_mean[:, None, None]``)."""
        return self.source(name)[0]

    def source(self, name: str) -> tuple[np.ndarray | None, str]:
        """The constant behind ``name`` and the stored tensor it comes from."""
        value = self.consts.value(name)
        node = self.producer.get(name)
        if value is not None or node is None or node.op_type not in _RESHAPES:
            return value, name
        base, origin = self.source(node.input[0])
        if base is None:
            return None, name
        if node.op_type == "Reshape":
            shape = self.consts.value(node.input[1]) if len(node.input) > 1 else None
            if shape is None:
                return None, name
            dims = [base.shape[i] if d == 0 else int(d) for i, d in enumerate(shape.reshape(-1))]
            return base.reshape(dims), origin
        axes = self.consts.value(node.input[1]) if len(node.input) > 1 else \
            np.array(attr(node, "axes") or [], dtype=np.int64)
        if axes is None:
            return None, name
        for axis in sorted(int(a) for a in axes.reshape(-1)):
            base = np.expand_dims(base, axis) if node.op_type == "Unsqueeze" \
                else np.squeeze(base, axis)
        return base, origin

    def only_user(self, name: str) -> onnx.NodeProto | None:
        found = self.users.get(name, [])
        return found[0] if len(found) == 1 and name not in self.outputs else None

    def private(self, node: onnx.NodeProto) -> bool:
        """No node outside the group reads ``node``'s outputs."""
        return all(len(self.users.get(o, [])) <= 1 and o not in self.outputs
                   for o in node.output)


def fuse_decomposed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with each decomposed BatchNorm one BatchNormalization node, and
    the names of those layers; ``model`` itself when there is none."""
    graph = model.graph
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            users[i].append(n)
    view = _Graph(Constants(graph), {o: n for n in graph.node for o in n.output}, users,
                  {o.name for o in graph.output})
    groups = [g for n in graph.node if n.op_type == "Sub" if (g := _match(n, view)) is not None]
    if groups:
        ranks = {k: len(v) for k, v in static_shapes(model).items()}
        groups = [g for g in groups if _per_channel(g, ranks.get(g.x))]
    if not groups:
        return model, []
    new = onnx.ModelProto()
    new.CopyFrom(model)
    return new, _replace(new, groups)


def _match(sub: onnx.NodeProto, view: _Graph) -> _Group | None:
    """Follow ``x - mean`` through the ops a BatchNorm is written in, while each has no other
    reader: the division by the standard deviation (or multiplication by its inverse), an
    optional gamma, and a final beta."""
    x, m = sub.input[0], sub.input[1]
    mean, origin = view.source(m)
    if mean is None or view.value(x) is not None or mean.size < 2:
        return None
    g = _Group(x, np.asarray(mean, np.float64), origin, out=sub.output[0], nodes=[sub])
    while g.beta is None and (node := view.only_user(g.out)) is not None:
        other = _operand(node, g.out)
        if other is None:
            break
        std = None if g.var.size > 0 or node.op_type not in ("Div", "Mul") else \
            _std(other, view, inverse=node.op_type == "Mul")
        value = view.value(other)
        if std is not None:
            g.var, g.eps, helpers = std
            g.nodes += helpers
        elif node.op_type == "Mul" and g.gamma is None and value is not None:
            g.gamma = np.asarray(value, np.float64)
        elif node.op_type == "Add" and g.var.size > 0 and value is not None:
            g.beta = np.asarray(value, np.float64)
        else:
            break
        g.nodes.append(node)
        g.out = node.output[0]
    return g if g.var.size > 0 else None


def _operand(node: onnx.NodeProto, name: str) -> str | None:
    """The other input of a binary op that reads ``name`` (first, for a division)."""
    if len(node.input) != 2:
        return None
    a, b = node.input
    if a == name:
        return b
    return a if b == name and node.op_type in ("Mul", "Add") else None


def _std(name: str, view: _Graph, inverse: bool) -> tuple[np.ndarray, float,
                                                            list[onnx.NodeProto]] | None:
    """``Sqrt(var + eps)``, or with ``inverse`` ``Reciprocal`` of it, ``1 / Sqrt(var + eps)``
    or ``Pow(var + eps, -0.5)``: the variance, eps, and the nodes that compute it and nothing
    else."""
    node = view.producer.get(name)
    chain: list[onnx.NodeProto] = []
    if node is not None and inverse:
        if node.op_type == "Pow":
            exponent = view.value(node.input[1])
            if exponent is None or exponent.size != 1 or float(exponent.reshape(-1)[0]) != -0.5:
                return None
            return _var_eps(node.input[0], view, [node])
        one = view.value(node.input[0]) if node.op_type == "Div" else None
        if node.op_type == "Reciprocal" or (one is not None and one.size == 1
                                            and float(one.reshape(-1)[0]) == 1.0):
            chain.append(node)
            node = view.producer.get(node.input[-1])
        else:
            return None
    if node is None or node.op_type != "Sqrt":
        return None
    return _var_eps(node.input[0], view, [*chain, node])


def _var_eps(name: str, view: _Graph, chain: list[onnx.NodeProto]) -> tuple[
        np.ndarray, float, list[onnx.NodeProto]] | None:
    add = view.producer.get(name)
    if add is None or add.op_type != "Add":
        return None
    a, b = (view.value(i) for i in add.input)
    if a is None or b is None:
        return None
    var, eps = (a, b) if a.size >= b.size else (b, a)
    if eps.size != 1 or var.size < 2:
        return None
    # Helpers other nodes also read stay in the graph; the rest go with the group.
    return (np.asarray(var, np.float64), float(eps.reshape(-1)[0]),
            [n for n in [*chain, add] if view.private(n)])


def _per_channel(g: _Group, rank: int | None) -> bool:
    """Every constant holds one value per channel on axis 1 of ``x``, as BatchNormalization
    normalizes: shape (C, 1, ..., 1) padded on the left to ``x``'s rank, or (C,) for (N, C)."""
    arrays = [a for a in (g.mean, g.var, g.gamma, g.beta) if a is not None]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        return False
    shape = list(shapes.pop())
    while shape and shape[0] == 1:
        shape.pop(0)
    if not shape or any(d != 1 for d in shape[1:]):
        return False
    return rank is not None and rank - len(shape) == 1 if len(shape) == 1 else \
        rank is None or rank - len(shape) == 1


_PARAMS = (".weight", ".bias", ".running_mean", ".running_var")


def _replace(model: onnx.ModelProto, groups: list[_Group]) -> list[str]:
    """Put one BatchNormalization node in each group's place, its parameters named
    "<layer>.running_mean" (as torch's exporter names them, so findings name the layer)."""
    graph = model.graph
    fused = {g.out: g for g in groups}
    drop = {n.output[0] for g in groups for n in g.nodes} - set(fused)
    kept = [n for n in graph.node if not (n.output and n.output[0] in drop)]
    layers: list[str] = []
    for i, node in enumerate(kept):
        g = fused.get(node.output[0]) if node.output else None
        if g is None:
            continue
        m = MEAN.match(g.mean_name)
        layer = m["layer"] if m else g.nodes[0].name or g.out
        layers.append(layer)
        kept[i] = helper.make_node("BatchNormalization", [g.x, "", "", "", ""],
                                   [g.out], name=f"{layer}/BatchNormalization", epsilon=g.eps)
    del graph.node[:]
    graph.node.extend(kept)
    _only_needed(graph)
    # The old parameters are gone with the ops that read them, unless other nodes read them:
    # then the layer's parameters take another name.
    taken = {t.name for t in graph.initializer}
    for g, layer in zip(groups, layers, strict=True):
        ours = layer if not taken & {layer + p for p in _PARAMS} else f"{layer}_bn"
        node = next(n for n in graph.node if n.output and n.output[0] == g.out)
        ones, zeros = np.ones(g.mean.size), np.zeros(g.mean.size)
        for slot, (suffix, value) in enumerate(zip(_PARAMS, (
                ones if g.gamma is None else g.gamma, zeros if g.beta is None else g.beta,
                g.mean, g.var), strict=True), 1):
            name = ours + suffix
            graph.initializer.append(
                numpy_helper.from_array(value.reshape(-1).astype(np.float32), name))
            node.input[slot] = name
    return layers


def _only_needed(graph: onnx.GraphProto) -> None:
    """Drop the nodes and initializers no output needs: the statistics' old forms
    (initializers, Constant and Unsqueeze nodes) that only the replaced ops read."""
    needed = {o.name for o in graph.output}
    live: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if set(node.output) & needed:
            live.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(live))
    keep = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(keep)
