"""Statistics taps inside an ONNX graph: per-sample, per-channel reductions as extra outputs.

For a tapped tensor x of shape (N, C, *spatial) the graph itself computes, in float64 (float32
reductions in onnxruntime can sum naively, and a large offset would then swamp the variance):
  mean = ReduceMean(x over spatial)           (N, C, 1)
  m2   = ReduceSum((x - mean)^2 over spatial)  (N, C)
  shape = Shape(x)
so onnxruntime never returns whole activations: only these (N, C) summaries leave the graph.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bncheck.backends.onnxrt.graph import declare_initializers, opset

# ReduceMean takes its axes as an input from this opset on (an attribute before).
REDUCE_AXES_INPUT_OPSET = 18
# ReduceSum takes them as an input from this one.
REDUCE_SUM_AXES_INPUT_OPSET = 13
SUFFIXES = (".bncheck_mean", ".bncheck_m2", ".bncheck_shape")


def tap_outputs(tensor: str) -> tuple[str, str, str]:
    """Names of the mean, M2 and shape outputs for ``tensor``."""
    return tuple(tensor + s for s in SUFFIXES)  # type: ignore[return-value]


def add_taps(proto: onnx.ModelProto, tensors: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs the per-sample summaries of ``tensors``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    version = opset(out)
    g.initializer.extend([numpy_helper.from_array(np.array([0, 0, -1], np.int64), "bncheck.nc_s"),
                          numpy_helper.from_array(np.array([2], np.int64), "bncheck.axis2")])
    for t in tensors:
        p = f"{t}.bncheck"
        mean, m2, shape = tap_outputs(t)
        g.node.extend([
            helper.make_node("Shape", [t], [shape], name=f"{p}/Shape"),
            helper.make_node("Reshape", [t, "bncheck.nc_s"], [f"{p}.flat"], name=f"{p}/Flatten"),
            helper.make_node("Cast", [f"{p}.flat"], [f"{p}.f64"], name=f"{p}/Cast",
                             to=onnx.TensorProto.DOUBLE),
            _reduce("ReduceMean", f"{p}.f64", mean, version, keep=True, name=f"{p}/Mean"),
            helper.make_node("Sub", [f"{p}.f64", mean], [f"{p}.dev"], name=f"{p}/Sub"),
            helper.make_node("Mul", [f"{p}.dev", f"{p}.dev"], [f"{p}.sq"], name=f"{p}/Square"),
            _reduce("ReduceSum", f"{p}.sq", m2, version, keep=False, name=f"{p}/M2"),
        ])
        g.output.extend(helper.make_empty_tensor_value_info(o) for o in (mean, m2, shape))
    declare_initializers(out)
    return out


def _reduce(op: str, x: str, y: str, version: int, *, keep: bool, name: str) -> onnx.NodeProto:
    as_input = version >= (REDUCE_AXES_INPUT_OPSET if op == "ReduceMean"
                           else REDUCE_SUM_AXES_INPUT_OPSET)
    if as_input:
        return helper.make_node(op, [x, "bncheck.axis2"], [y], keepdims=int(keep), name=name)
    return helper.make_node(op, [x], [y], axes=[2], keepdims=int(keep), name=name)
