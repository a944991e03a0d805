"""Statistics taps inside an ONNX graph: per-sample, per-channel reductions as extra outputs.

A tapped tensor x of shape (N, C, *spatial) is viewed as rows, (N, C, R, W): W is its last
spatial axis for rank 4 and up where that is at most MAX_ROW long, else 1. The graph computes,
in float32:
  m  = mean over R of ReduceMean(x over W)      a per-sample shift, not the answer
  d  = x - m                            exact where x is within a factor 2 of m (Sterbenz)
  s1 = sum over R of ReduceSum(d over W)         the row sums cast to float64 first
  s2 = sum over R of ReduceSumSquare(d over W)   likewise
  shape = Shape(x)
and the host finishes in float64 with the corrected two-pass formula: mean = m + s1/n and
M2 = s2 - s1^2/n, n = R*W. The correction cancels the shift's own rounding to first order, so the
only float32 sums are single rows of d, whose error grows like sqrt(W) * 2^-24. The second order
remains: a shift off by a sizeable part of the spread costs precision, which is why m is a mean
of row means (one float32 mean of a whole map was that far off from 1024x1024 on). Measured
against float64 numpy under a 1e4 offset: 1.6e-07 relative at 512x512, 1.2e-06 at 1024x1024,
1.7e-06 at 2048x2048 (1.9e-05 and 5.1e-05 with a one-level mean), 4.0e-06 for rows of 4096;
rows of 16384 gave 1.2e-05 in float32, hence MAX_ROW (4.7e-10 summed in float64, as W = 1).
Float64 over the whole tensor (this module's first form) cost a Cast of every element and three
float64 passes; this reads the tensor four times in float32.

A tensor known to be (N, C, H, W) (a 2-D convolution's output, ``rows``) is tapped by the same
arithmetic in eight nodes instead of nineteen: its rows are its last axis as it stands, and the
(N, C, H) row sums leave the graph for the host to add up in float64. The shape computations
and casts of the general form cost their dispatch on every run (0.03 to 0.16 of a plain pass
on the bench's ResNet-18 layout); the caller checks that W is within MAX_ROW (``row_fits``).
onnxruntime never returns whole activations: only (N, C) summaries, and (N, C, H) row sums,
leave the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bncheck.backends.onnxrt.graph import declare_initializers, node_reads, opset
from bncheck.core.network.model import TapSummary

# Reduce ops take their axes as an input from these opsets on (an attribute before).
AXES_INPUT_OPSET = {"ReduceSum": 13, "ReduceMean": 18, "ReduceSumSquare": 18}
# Slice takes starts and ends as inputs from this opset on.
SLICE_INPUTS_OPSET = 10
# Where, and Greater on integers, exist from this opset on.
WHERE_OPSET = 9
SUFFIXES = (".bncheck_shift", ".bncheck_s1", ".bncheck_s2", ".bncheck_shape")
# The longest row summed in float32: under the 1e4 offset, rows of 4096 give 4.0e-06 relative in
# the variance, rows of 16384 1.2e-05 (over the 1e-5 promise). Longer rows are summed element by
# element in float64, as rank 3 is.
MAX_ROW = 4096
# Constants the tap nodes share (one copy, whatever the number of taps).
_CONSTS = {"bncheck.keep_nc": [0, 0, -1], "bncheck.nc11": [0, 0, 1, 1], "bncheck.one": [1],
           "bncheck.axes_2": [2], "bncheck.axes_3": [3], "bncheck.from_3": [3],
           "bncheck.from_last": [-1], "bncheck.to_end": [2**62],
           "bncheck.max_row": [MAX_ROW], "bncheck.over_max_row": [MAX_ROW + 1]}


def tap_outputs(tensor: str) -> tuple[str, str, str, str]:
    """Names of the shift, row-sum, squared-row-sum and shape outputs for ``tensor``."""
    return tuple(tensor + s for s in SUFFIXES)  # type: ignore[return-value]


def add_taps(proto: onnx.ModelProto, tensors: tuple[str, ...], *,
             only_taps: bool = False, rows: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs the per-sample summaries of ``tensors``.

    With ``only_taps``, the summaries are its only outputs, and it keeps only the nodes they
    need: onnxruntime runs every node of a graph whatever outputs a run asks for. The tensors
    in ``rows`` are rank 4 and tapped in the short form (module docstring).
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    version = opset(out)
    g.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k)
                         for k, v in _CONSTS.items())
    if only_taps:
        del g.output[:]
    for t in tensors:
        g.node.extend(_row_tap_nodes(t, version) if t in rows else _tap_nodes(t, version))
        g.output.extend(helper.make_empty_tensor_value_info(o) for o in tap_outputs(t))
    if only_taps:
        _keep_needed(g)
    declare_initializers(out)
    return out


def row_fits(got: Mapping[str, np.ndarray], tensor: str) -> bool:
    """Whether a tensor tapped in the short form has rows short enough for float32 sums."""
    return int(got[tap_outputs(tensor)[3]][-1]) <= MAX_ROW


def summary(got: Mapping[str, np.ndarray], tensor: str) -> TapSummary:
    """The float64 (N, C) mean and M2 of ``tensor`` from its tap outputs in ``got``."""
    shift, s1, s2, shape = (got[o] for o in tap_outputs(tensor))
    if s1.ndim == 3:
        # The short form's (N, C, H) row sums, added up here in float64 as the general form
        # does in-graph. A product with ones is the same float64 sum at a quarter of the cost
        # of np.sum's casting loop (10 against 40 microseconds for (32, 64, 8)): this runs
        # twice per tapped layer per batch.
        ones = np.ones(s1.shape[2])
        s1, s2 = s1.astype(np.float64) @ ones, s2.astype(np.float64) @ ones
    n_c = (int(shape[0]), int(shape[1]))
    n = float(np.prod(shape[2:]))
    s1 = s1.reshape(n_c)
    delta = s1 / n
    # For a constant channel the two terms of M2 agree to rounding: never let it go negative.
    return TapSummary(shift.reshape(n_c).astype(np.float64) + delta,
                      np.maximum(s2.reshape(n_c) - s1 * delta, 0.0),
                      tuple(int(d) for d in shape[1:]))


def _keep_needed(g: onnx.GraphProto) -> None:
    """Drop the nodes that no graph output depends on (initializers stay: old graphs declare
    them as inputs, and onnxruntime drops the unused ones itself)."""
    needed = {o.name for o in g.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(g.node):
        if needed.isdisjoint(node.output):
            continue
        kept.append(node)
        needed |= node_reads(node)
    del g.node[:]
    g.node.extend(reversed(kept))


def _tap_nodes(t: str, version: int) -> list[onnx.NodeProto]:
    p = f"{t}.bncheck"
    shift, s1, s2, shape = tap_outputs(t)
    return [
        helper.make_node("Shape", [t], [shape], name=f"{p}/Shape"),
        # W: the last spatial axis from rank 4 on, else 1 (rank 3 sums its one axis in float64);
        # then 1 for a row over MAX_ROW as well.
        _slice(shape, f"{p}.after_h", "bncheck.from_3", version, f"{p}/AfterH"),
        helper.make_node("Concat", ["bncheck.one", f"{p}.after_h"], [f"{p}.w_candidates"], axis=0,
                         name=f"{p}/WCandidates"),
        _slice(f"{p}.w_candidates", f"{p}.w", "bncheck.from_last", version, f"{p}/W"),
        *_row_length(p, version),
        helper.make_node("Concat", ["bncheck.keep_nc", f"{p}.row"], [f"{p}.rows_shape"], axis=0,
                         name=f"{p}/RowsShape"),
        # Half-precision activations are reduced in float32; onnxruntime drops a no-op Cast.
        helper.make_node("Cast", [t], [f"{p}.f32"], to=onnx.TensorProto.FLOAT, name=f"{p}/Cast"),
        helper.make_node("Reshape", [f"{p}.f32", f"{p}.rows_shape"], [f"{p}.rows"],
                         name=f"{p}/Rows"),
        *_row_sums(p, f"{p}.rows", shift, f"{p}.s1_rows", f"{p}.s2_rows", version),
        helper.make_node("Cast", [f"{p}.s1_rows"], [f"{p}.s1_rows64"], to=onnx.TensorProto.DOUBLE,
                         name=f"{p}/S1Rows64"),
        helper.make_node("Cast", [f"{p}.s2_rows"], [f"{p}.s2_rows64"], to=onnx.TensorProto.DOUBLE,
                         name=f"{p}/S2Rows64"),
        _reduce("ReduceSum", f"{p}.s1_rows64", s1, "bncheck.axes_2", [2], version, f"{p}/S1",
                keep=False),
        _reduce("ReduceSum", f"{p}.s2_rows64", s2, "bncheck.axes_2", [2], version, f"{p}/S2",
                keep=False),
    ]


def _row_tap_nodes(t: str, version: int) -> list[onnx.NodeProto]:
    """The short form for an (N, C, H, W) tensor: the general form's arithmetic on its rows as
    they stand, without the shape computations, and with the row sums summed on the host."""
    p = f"{t}.bncheck"
    shift, s1, s2, shape = tap_outputs(t)
    return [
        helper.make_node("Shape", [t], [shape], name=f"{p}/Shape"),
        helper.make_node("Cast", [t], [f"{p}.f32"], to=onnx.TensorProto.FLOAT, name=f"{p}/Cast"),
        *_row_sums(p, f"{p}.f32", shift, s1, s2, version),
    ]


def _row_sums(p: str, rows: str, shift: str, s1_rows: str, s2_rows: str,
              version: int) -> list[onnx.NodeProto]:
    """The shift of (N, C, R, W) ``rows`` and each row's float32 sums of deviations from it
    (``s1_rows``, ``s2_rows``, (N, C, R)): the arithmetic both forms share."""
    return [
        # The shift is a mean of row means: one float32 mean over a whole 1024x1024 map was so
        # far off under a 1e4 offset that the correction left 1.9e-05 in the variance.
        # (The first level drops its axis: onnxruntime reduces a trailing axis of length 1 slowly.)
        _reduce("ReduceMean", rows, f"{p}.row_means", "bncheck.axes_3", [3], version,
                f"{p}/RowMeans", keep=False),
        _reduce("ReduceMean", f"{p}.row_means", f"{p}.shift_nc1", "bncheck.axes_2", [2], version,
                f"{p}/MeanOfRows"),
        helper.make_node("Reshape", [f"{p}.shift_nc1", "bncheck.nc11"], [shift], name=f"{p}/Shift"),
        helper.make_node("Sub", [rows, shift], [f"{p}.dev"], name=f"{p}/Dev"),
        _reduce("ReduceSum", f"{p}.dev", s1_rows, "bncheck.axes_3", [3], version, f"{p}/S1Rows",
                keep=False),
        _reduce("ReduceSumSquare", f"{p}.dev", s2_rows, "bncheck.axes_3", [3], version,
                f"{p}/S2Rows", keep=False),
    ]


def _row_length(p: str, version: int) -> list[onnx.NodeProto]:
    """``{p}.row``: ``{p}.w``, or 1 where that is over MAX_ROW."""
    w, one = f"{p}.w", "bncheck.one"
    if version >= WHERE_OPSET:
        return [helper.make_node("Greater", [w, "bncheck.max_row"], [f"{p}.row_long"],
                                 name=f"{p}/RowLong"),
                helper.make_node("Where", [f"{p}.row_long", one, w], [f"{p}.row"],
                                 name=f"{p}/Row")]

    # Integer arithmetic before that: long = 1 - 1 // (1 + w // (MAX_ROW + 1)) is 0 or 1, and
    # row = w - long * (w - 1). (Seven nodes, against two: they slow session creation.)
    def op(kind: str, a: str, b: str, out: str) -> onnx.NodeProto:
        return helper.make_node(kind, [a, b], [f"{p}.{out}"], name=f"{p}/{out}")

    return [op("Div", w, "bncheck.over_max_row", "row_blocks"),
            op("Add", f"{p}.row_blocks", one, "row_blocks1"),
            op("Div", one, f"{p}.row_blocks1", "row_fits"),
            op("Sub", one, f"{p}.row_fits", "row_long"),
            op("Sub", w, one, "w_less1"),
            op("Mul", f"{p}.row_long", f"{p}.w_less1", "row_cut"),
            op("Sub", w, f"{p}.row_cut", "row")]


def _reduce(op: str, x: str, y: str, axes_const: str, axes: list[int], version: int, name: str,
            *, keep: bool = True) -> onnx.NodeProto:
    if version >= AXES_INPUT_OPSET[op]:
        return helper.make_node(op, [x, axes_const], [y], keepdims=int(keep), name=name)
    return helper.make_node(op, [x], [y], axes=axes, keepdims=int(keep), name=name)


def _slice(x: str, y: str, start_const: str, version: int, name: str) -> onnx.NodeProto:
    if version >= SLICE_INPUTS_OPSET:
        return helper.make_node("Slice", [x, start_const, "bncheck.to_end"], [y], name=name)
    return helper.make_node("Slice", [x], [y], starts=_CONSTS[start_const],
                            ends=_CONSTS["bncheck.to_end"], name=name)
