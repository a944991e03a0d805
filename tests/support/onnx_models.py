"""ONNX models built in tests, stamped with an IR version every supported onnxruntime reads."""

from __future__ import annotations

import onnx
from onnx import helper

# helper.make_model stamps the installed onnx's newest IR version, which can be newer than the
# installed onnxruntime reads (IR 14 against 13 on the GPU image): pin one both read.
IR_VERSION = 8


def onnx_model(graph: onnx.GraphProto, opset: int, ir_version: int = IR_VERSION
               ) -> onnx.ModelProto:
    """``graph`` as a model of the default domain at ``opset``."""
    return helper.make_model(graph, ir_version=ir_version,
                             opset_imports=[helper.make_opsetid("", opset)])


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float16: float32 weights, constants, inputs and outputs become
    float16, as a float16 export stores them (attributes such as epsilon stay float32)."""
    import numpy as np
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    half = onnx.TensorProto.FLOAT16

    def cast(t: onnx.TensorProto) -> None:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16),
                                               t.name))

    for init in m.graph.initializer:
        cast(init)
    for node in m.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                cast(a.t)
            elif node.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                a.i = half
    for v in [*m.graph.input, *m.graph.output, *m.graph.value_info]:
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            v.type.tensor_type.elem_type = half
    return m
