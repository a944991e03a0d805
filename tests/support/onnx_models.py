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
