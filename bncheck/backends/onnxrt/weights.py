"""onnxruntime sessions whose large weights are handed over as values, not serialized in the graph.

compare builds three sessions of one model (eval with taps, the reference with taps, the
reference alone) and rewrite's verification more. Serialized with its weights, each graph is
written out and parsed back whole: for ResNet-18's 44 MB that took 0.14 s a session, against
0.046 s with the weights handed over this way (same outputs, bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from bncheck.backends.onnxrt.graph import NP_TYPES, graph_reads

# Smaller tensors stay in the graph, where they cost less than the bookkeeping would.
MIN_BYTES = 4096
# onnxruntime asks for an external-data reference in place of each handed-over tensor; it never
# opens this file, since every tensor that names it is given to the session options.
LOCATION = "bncheck-weights"


def session(proto: onnx.ModelProto, opts: Any, providers: Sequence[Any], *,
            owned: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``proto``.

    ``owned``: the caller hands ``proto`` over (a copy made for this session), so its large
    initializers are emptied in place instead of in a copy.
    """
    import onnxruntime as ort

    light = proto
    if not owned:
        light = onnx.ModelProto()
        light.CopyFrom(proto)
    names, values = [], []
    # onnxruntime drops an initializer that nothing reads before it takes the values handed
    # over, and then fails to find it: those stay in the graph.
    read = graph_reads(light.graph)
    for t in light.graph.initializer:
        if (t.data_type not in NP_TYPES or t.data_location == onnx.TensorProto.EXTERNAL
                or t.name not in read):
            continue
        raw = t.raw_data
        if len(raw) < MIN_BYTES:
            continue
        # A view of the bytes, not a copy; onnxruntime copies the data into its graph.
        array = np.frombuffer(raw, dtype=NP_TYPES[t.data_type]).reshape(tuple(t.dims))
        names.append(t.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(array))
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", LOCATION), ("offset", "0"), ("length", str(len(raw)))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
    if names:
        opts.add_external_initializers(names, values)
    # ``values`` stays referenced until this returns, after the session has copied it in.
    return ort.InferenceSession(light.SerializeToString(), opts, providers=providers)
