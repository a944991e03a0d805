"""Reading ONNX graphs: loading with plain errors, constant resolution, ranks, opset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bncheck.errors import BncheckError, reading

# What bncheck exports torch models at.
EXPORT_OPSET = 17
# Graphs older than this are converted up before a rewrite: BatchNormalization changed its
# attributes (spatial, is_test) until opset 9. Newer graphs keep their own opset.
MIN_REWRITE_OPSET = 9
# The element types whose bytes numpy reads as they are: those of the inputs bncheck feeds, and
# of the weights it hands to onnxruntime as values.
NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
}


def load_proto(path: Path) -> onnx.ModelProto:
    """Parse and sanity-check an ONNX file, turning parser failures into one-line errors."""
    with reading(path, "an ONNX model",
                 advice="the file is truncated or not ONNX: export it again"):
        model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        _load_external(model, path)
    if not model.graph.node:
        raise BncheckError(f"{path} parses as ONNX but holds no graph nodes; export it again")
    return model


def _load_external(model: onnx.ModelProto, path: Path) -> None:
    """External tensor data, read only from inside the model's own folder."""
    from onnx.external_data_helper import load_external_data_for_model

    folder = path.resolve().parent
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise BncheckError(f"{path}: tensor {t.name} keeps its data at {location!r}, outside "
                               "the model's folder; bncheck reads external data only from beside "
                               "the model")
        if not target.is_file():
            raise BncheckError(f"{path}: tensor {t.name} keeps its data in {location!r}, which is "
                               "missing; copy it next to the model")
    with reading(path, "an ONNX model with its external tensor data",
                 advice="copy the data files next to the model again"):
        load_external_data_for_model(model, str(folder))


# Before IR version 4 every initializer must also be declared as a graph input.
INITIALIZERS_AS_INPUTS_BEFORE_IR = 4


def declare_initializers(model: onnx.ModelProto) -> None:
    """Keep an old (IR < 4) graph valid after initializers were added: declare them as inputs."""
    if model.ir_version >= INITIALIZERS_AS_INPUTS_BEFORE_IR:
        return
    declared = {vi.name for vi in model.graph.input}
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in model.graph.initializer if t.name not in declared)


def node_reads(node: onnx.NodeProto) -> set[str]:
    """Every name ``node`` reads: its inputs, and all that its subgraphs (If, Loop, Scan) read,
    outer-scope names included."""
    names = set(node.input)
    for a in node.attribute:
        for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for n in sub.node:
                names |= node_reads(n)
    return names


def graph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every name the nodes of ``graph`` read (``node_reads``), and its outputs."""
    names = {o.name for o in graph.output}
    for n in graph.node:
        names |= node_reads(n)
    return names


def opset(model: onnx.ModelProto) -> int:
    """The default-domain opset version."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def ensure_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return the model at opset >= MIN_REWRITE_OPSET (a converted copy if older)."""
    if opset(model) >= MIN_REWRITE_OPSET:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, MIN_REWRITE_OPSET)
    except Exception as e:  # the converter raises its own error types
        raise BncheckError(f"this graph's opset {opset(model)} predates BatchNormalization's "
                           f"current form and cannot be converted to {MIN_REWRITE_OPSET} "
                           f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


class Constants:
    """Resolves a tensor name to its constant value through initializers, Constant and Identity.

    Real exports feed BN parameters through Constant nodes (PaddleOCR) or Identity nodes
    (shared initializers), not only through initializers.
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._init = {t.name: t for t in graph.initializer}
        self._producer = {o: n for n in graph.node for o in n.output}

    def value(self, name: str) -> np.ndarray | None:
        """The constant behind ``name``, or None when it is computed at run time."""
        seen = 0
        while seen < 64:  # an Identity chain longer than this is a cycle, not a model
            seen += 1
            if name in self._init:
                return tensor_array(self._init[name])
            node = self._producer.get(name)
            if node is None:
                return None
            if node.op_type == "Identity":
                name = node.input[0]
                continue
            if node.op_type == "Constant":
                return _constant_value(node)
            return None
        return None


# Element types a parameter may have: real numbers.
_NUMERIC = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
            onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.INT16,
            onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8,
            onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def tensor_array(t: onnx.TensorProto) -> np.ndarray:
    """The values of a stored tensor, after checking its type and that it holds what its
    dims declare (a tensor claiming 2^40 elements is refused, not allocated)."""
    kind = onnx.TensorProto.DataType.Name(t.data_type) if t.data_type in \
        onnx.TensorProto.DataType.values() else str(t.data_type)
    if t.data_type not in _NUMERIC:
        raise BncheckError(f"tensor {t.name!r} holds {kind} values, not numbers")
    count = int(np.prod(list(t.dims), dtype=np.float64)) if len(t.dims) else 1
    if t.HasField("raw_data"):
        have = len(t.raw_data) // np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    else:
        have = len(getattr(t, helper.tensor_dtype_to_field(t.data_type)))
    if have != count:
        raise BncheckError(f"tensor {t.name!r} declares {count} values but holds {have}")
    return numpy_helper.to_array(t)


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return tensor_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def set_attr(node: onnx.NodeProto, name: str, value: float | int) -> None:
    """Give ``node`` the attribute ``name`` = ``value``, replacing one it had."""
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])


def attr(node: onnx.NodeProto, name: str, default: float | int | None = None) -> float | int | None:
    """A scalar attribute of ``node``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Shapes of the tensors shape inference can tell; None where a dimension is free."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; callers fall back to a probe run
        inferred = model
    shapes: dict[str, tuple[int | None, ...]] = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.dim_value > 0 else None
                                    for d in t.shape.dim)
    return shapes


def conv2d_outputs(graph: onnx.GraphProto) -> frozenset[str]:
    """Tensors made by a 2-D Conv or ConvTranspose (a rank-4 weight stored in the graph): rank 4
    whatever the inputs, which the taps' short form needs to know before a session is built."""
    dims = {t.name: len(t.dims) for t in graph.initializer}
    return frozenset(n.output[0] for n in graph.node
                     if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1
                     and dims.get(n.input[1]) == 4)
