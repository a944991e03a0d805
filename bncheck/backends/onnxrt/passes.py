"""Rewrite passes over an ONNX graph. Each takes a ModelProto and returns a new one plus notes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bncheck.backends.onnxrt.graph import (
    Constants,
    attr,
    declare_initializers,
    graph_reads,
    opset,
    set_attr,
)
from bncheck.backends.onnxrt.layers import is_training_mode, layer_name
from bncheck.core.network.fold_math import FoldTarget, bn_scale_shift, fold_weights
from bncheck.core.network.layers import KEPT_2D
from bncheck.core.network.model import PopulationStats
from bncheck.core.network.naming import unique_name
from bncheck.core.network.numerics import DEFAULT_EPS
from bncheck.core.network.options import RewriteMode
from bncheck.errors import BncheckError

_FOLDABLE = ("Conv", "ConvTranspose", "Gemm")


def apply_pass(model: onnx.ModelProto, mode: RewriteMode,
               shapes: Mapping[str, tuple[int | None, ...]],
               stats: PopulationStats | None, training_nodes: bool = False
               ) -> tuple[onnx.ModelProto, list[str]]:
    """Apply ``mode`` to a copy of ``model``; ``shapes`` maps BN input tensors to their shapes
    (None for dimensions not known).

    With ``training_nodes`` (onnxruntime's CPU provider runs them) the reference graphs, which
    bncheck runs but never writes, keep each BatchNormalization as one node in training mode:
    one kernel, where the portable form is nine ops (1.4x the plain graph's time on the bench's
    ResNet-18 layout).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    editor = _Editor(out, training_nodes)
    notes: list[str] = []
    for index, node in enumerate(list(out.graph.node)):
        if node.op_type != "BatchNormalization":
            continue
        name = layer_name(node, index)
        shape = shapes.get(node.input[0])
        rank = None if shape is None else len(shape)
        if is_training_mode(node):
            # Its extra outputs (updated running stats) may be graph outputs: leave it whole.
            notes.append(f"{name}: normalizes with batch statistics already (training_mode=1); "
                         "left as it is")
            continue
        if mode is RewriteMode.RECALIBRATE:
            notes.extend(editor.recalibrate(node, name, stats))
        elif mode is RewriteMode.FOLD:
            notes.append(editor.fold(node, index, name, rank))
        else:
            notes.extend(editor.normalize_with_data(node, index, name, mode, shape))
    editor.finish()
    declare_initializers(out)
    return out, notes


class _Editor:
    """Accumulates node replacements and new initializers, applied in ``finish``."""

    def __init__(self, model: onnx.ModelProto, training_nodes: bool = False) -> None:
        self.graph = model.graph
        self.consts = Constants(model.graph)
        self.opset = opset(model)
        # training_mode needs BatchNormalization-14.
        self.training_nodes = training_nodes and self.opset >= 14
        self.replace: dict[int, list[onnx.NodeProto]] = {}
        self.new_inits: list[onnx.TensorProto] = []
        self.used = {t.name for t in model.graph.initializer} | {
            o for n in model.graph.node for o in n.output
        } | {i.name for i in model.graph.input}

    # -- helpers -----------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        name = unique_name(base, self.used.__contains__)
        self.used.add(name)
        return name

    def _const(self, base: str, value: np.ndarray) -> str:
        name = self._fresh(base)
        self.new_inits.append(numpy_helper.from_array(value, name))
        return name

    def _params(self, node: onnx.NodeProto, name: str) -> list[np.ndarray]:
        vals = [self.consts.value(i) for i in node.input[1:5]]
        if any(v is None for v in vals):
            raise BncheckError(
                f"layer {name}: its BatchNormalization parameters are computed at run time, not "
                "stored as constants; bncheck cannot rewrite it"
            )
        return [np.asarray(v, dtype=np.float64).reshape(-1) for v in vals if v is not None]

    def _dtype(self, node: onnx.NodeProto) -> np.dtype:
        v = self.consts.value(node.input[1])
        return np.dtype(np.float32) if v is None else v.dtype

    # -- passes --------------------------------------------------------------------------------
    def recalibrate(self, node: onnx.NodeProto, name: str, stats: PopulationStats | None) -> list[str]:
        if stats is None or name not in stats:
            return [f"{name}: no sample statistics reached this layer; kept its running stats"]
        # ONNX's own training-mode running_var is the biased variance.
        mean, var = stats[name].mean, stats[name].var
        assert mean is not None
        dt = self._dtype(node)
        old_mean = self.consts.value(node.input[3])
        node.input[3] = self._const(f"{name}.running_mean.recalibrated", mean.astype(dt))
        node.input[4] = self._const(f"{name}.running_var.recalibrated", var.astype(dt))
        shift = float(np.abs(mean - np.asarray(old_mean, dtype=np.float64)).max()) \
            if old_mean is not None else float("nan")
        return [f"{name}: running stats re-estimated (max |mean shift| {shift:.3g})"]

    def normalize_with_data(self, node: onnx.NodeProto, index: int, name: str, mode: RewriteMode,
                            shape: tuple[int | None, ...] | None) -> list[str]:
        if shape is None:
            raise BncheckError(f"layer {name}: the rank of its input is unknown; run with --data")
        rank = len(shape)
        if rank < 2:
            raise BncheckError(f"layer {name}: BatchNormalization input of rank {rank}")
        # One value per channel per sample ((N, C), or known 1x1 maps): no per-sample statistics.
        no_spatial = rank == 2 or all(d == 1 for d in shape[2:])
        if no_spatial and mode is not RewriteMode.REFERENCE:
            return [f"{name}: {KEPT_2D}"]
        # SPATIAL_REFERENCE is the batch-stats graph: ONNX has no layer classes around the BN
        # that a rewrite could lose, so there is nothing more independent to check against.
        per_sample = mode is RewriteMode.INSTANCE_NORM
        axes = list(range(2, rank)) if per_sample else [0, *range(2, rank)]
        gamma, beta, _, _ = self._params(node, name)
        eps = float(attr(node, "epsilon", DEFAULT_EPS) or 0.0)
        dt = self._dtype(node)
        bshape = (-1,) + (1,) * (rank - 2)
        x, y = node.input[0], node.output[0]
        p = self._fresh(f"{name}.bncheck")
        cast_in: list[onnx.NodeProto] = []
        cast_back: list[onnx.NodeProto] = []
        if not per_sample and dt.itemsize < 4:
            # Batch statistics of a half-precision layer are computed in float32, as torch and
            # cuDNN do: in float16 a square of 0.004 is already subnormal, an eps under 6e-8
            # rounds to 0, and a channel that is constant over the batch (a dead ReLU) divides
            # 0 by 0.
            elem = onnx.helper.np_dtype_to_tensor_dtype(dt)
            cast_in = [helper.make_node("Cast", [x], [f"{p}.x32"], to=onnx.TensorProto.FLOAT,
                                        name=f"{p}/CastIn")]
            cast_back = [helper.make_node("Cast", [f"{p}.y32"], [y], to=elem,
                                          name=f"{p}/CastOut")]
            x, y, dt = f"{p}.x32", f"{p}.y32", np.dtype(np.float32)
        if not per_sample and not cast_in and self.training_nodes and \
                mode in (RewriteMode.REFERENCE, RewriteMode.SPATIAL_REFERENCE):
            # Batch statistics in one node; its updated running stats go nowhere.
            fused = onnx.NodeProto()
            fused.CopyFrom(node)
            del fused.output[1:]
            fused.output.extend([f"{p}.running_mean", f"{p}.running_var"])
            set_attr(fused, "training_mode", 1)
            self.replace[index] = [fused]
            return []
        if per_sample:
            # One fused kernel, supported by every execution provider.
            self.replace[index] = [helper.make_node(
                "InstanceNormalization",
                [x, self._const(f"{p}.gamma", gamma.astype(dt)), self._const(f"{p}.beta", beta.astype(dt))],
                [y], epsilon=eps, name=f"{p}/InstanceNormalization")]
            return []
        # y = (x - mean) * (gamma / sqrt(var + eps)) + beta: the scale is computed on the small
        # per-channel tensor, so only Sub, Mul, Mul, Add touch every element.
        nodes = [
            self._reduce_mean(x, f"{p}.mean", axes, name=f"{p}/ReduceMean"),
            helper.make_node("Sub", [x, f"{p}.mean"], [f"{p}.centered"], name=f"{p}/Sub"),
            helper.make_node("Mul", [f"{p}.centered", f"{p}.centered"], [f"{p}.sq"],
                             name=f"{p}/Square"),
            self._reduce_mean(f"{p}.sq", f"{p}.var", axes, name=f"{p}/ReduceVar"),
            helper.make_node("Add", [f"{p}.var", self._const(f"{p}.eps", np.array(eps, dt))],
                             [f"{p}.var_eps"], name=f"{p}/AddEps"),
            helper.make_node("Sqrt", [f"{p}.var_eps"], [f"{p}.std"], name=f"{p}/Sqrt"),
            helper.make_node("Div", [self._const(f"{p}.gamma", gamma.astype(dt).reshape(bshape)),
                                     f"{p}.std"], [f"{p}.scale"], name=f"{p}/Scale"),
            helper.make_node("Mul", [f"{p}.centered", f"{p}.scale"], [f"{p}.scaled"],
                             name=f"{p}/Normalize"),
            helper.make_node("Add", [f"{p}.scaled",
                                     self._const(f"{p}.beta", beta.astype(dt).reshape(bshape))],
                             [y], name=f"{p}/Shift"),
        ]
        self.replace[index] = cast_in + nodes + cast_back
        return []

    def _reduce_mean(self, x: str, y: str, axes: list[int], name: str) -> onnx.NodeProto:
        # ReduceMean takes axes as an attribute up to opset 17 and as an input from 18 on.
        if self.opset >= 18:
            a = self._const(f"{y}.axes", np.array(axes, dtype=np.int64))
            return helper.make_node("ReduceMean", [x, a], [y], keepdims=1, name=name)
        return helper.make_node("ReduceMean", [x], [y], axes=axes, keepdims=1, name=name)

    def fold(self, node: onnx.NodeProto, index: int, name: str, rank: int | None) -> str:
        gamma, beta, mean, var = self._params(node, name)
        eps = float(attr(node, "epsilon", DEFAULT_EPS) or 0.0)
        scale, shift = bn_scale_shift(name, gamma, beta, mean, var, eps)
        prev = self._foldable_producer(node)
        if prev is not None and self._fold_into(prev, node, index, scale, shift):
            return f"{name}: folded into {prev.op_type} {prev.name or prev.output[0]}"
        if rank is None:
            raise BncheckError(f"layer {name}: the rank of its input is unknown; run with --data")
        dt = self._dtype(node)
        bshape = (-1,) + (1,) * (rank - 2)
        mid = self._fresh(f"{name}.scaled")
        self.replace[index] = [
            helper.make_node("Mul", [node.input[0],
                                     self._const(f"{name}.fold_scale", scale.astype(dt).reshape(bshape))],
                             [mid], name=f"{name}/FoldScale"),
            helper.make_node("Add", [mid,
                                     self._const(f"{name}.fold_shift", shift.astype(dt).reshape(bshape))],
                             [node.output[0]], name=f"{name}/FoldShift"),
        ]
        return f"{name}: follows no foldable op; became a per-channel scale and shift"

    def _foldable_producer(self, node: onnx.NodeProto) -> onnx.NodeProto | None:
        x = node.input[0]
        producers = [n for n in self.graph.node if x in n.output]
        consumers = [n for n in self.graph.node if x in n.input]
        outputs = {o.name for o in self.graph.output}
        if len(producers) != 1 or len(consumers) != 1 or x in outputs:
            return None
        prev = producers[0]
        return prev if prev.op_type in _FOLDABLE else None

    def _fold_into(self, prev: onnx.NodeProto, bn: onnx.NodeProto, index: int,
                   scale: np.ndarray, shift: np.ndarray) -> bool:
        w = self.consts.value(prev.input[1])
        if w is None:
            return False
        b_in = self.consts.value(prev.input[2]) if len(prev.input) > 2 and prev.input[2] else None
        if len(prev.input) > 2 and prev.input[2] and b_in is None:
            return False
        w64 = np.asarray(w, dtype=np.float64)
        if prev.op_type == "Gemm":
            b64 = None if b_in is None else np.asarray(b_in, np.float64).reshape(-1)
            if int(attr(prev, "transA", 0) or 0) or (b64 is not None and b64.size != scale.size):
                return False  # transA or a 2-D bias would not be a per-channel fold
            trans_b = int(attr(prev, "transB", 0) or 0)
            w64 = w64 * float(attr(prev, "alpha", 1.0) or 1.0)
            if b64 is not None:
                b_in = b64 * float(attr(prev, "beta", 1.0) or 1.0)
            # Folding works on (out, in); alpha and beta end up inside the new tensors.
            new_w, new_b = fold_weights(FoldTarget.LINEAR, w64 if trans_b else w64.T, b_in,
                                        scale, shift)
            del prev.attribute[:]
            prev.attribute.append(helper.make_attribute("transB", 1))
        else:
            target = FoldTarget.CONV if prev.op_type == "Conv" else FoldTarget.CONV_TRANSPOSE
            groups = int(attr(prev, "group", 1) or 1)
            if b_in is not None and np.asarray(b_in).size != scale.size:
                return False
            new_w, new_b = fold_weights(target, w64, b_in, scale, shift, groups)
        dt = w.dtype
        prev.input[1] = self._const(f"{prev.input[1]}.folded", new_w.astype(dt))
        bias_name = self._const(f"{prev.name or prev.output[0]}.bias.folded", new_b.astype(dt))
        if len(prev.input) > 2:
            prev.input[2] = bias_name
        else:
            prev.input.append(bias_name)
        prev.output[0] = bn.output[0]
        self.replace[index] = []
        return True

    def finish(self) -> None:
        nodes: list[onnx.NodeProto] = []
        for i, n in enumerate(self.graph.node):
            nodes.extend(self.replace.get(i, [n]))
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self.graph.initializer.extend(self.new_inits)
        _drop_unused(self.graph)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove initializers and Constant/Identity nodes nothing reads any more."""
    while True:
        used = graph_reads(graph)
        dead = [n for n in graph.node if n.op_type in ("Constant", "Identity")
                and not any(o in used for o in n.output)]
        for n in dead:
            graph.node.remove(n)
        if not dead:
            break
    init_names = {t.name for t in graph.initializer}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # Older exports also list initializers among the graph inputs; drop those with them.
    keep_in = [i for i in graph.input if i.name in used or i.name not in init_names]
    del graph.input[:]
    graph.input.extend(keep_in)
