"""Writing torch models: .onnx (legacy exporter, BN kept), .pt2 (torch.export), checkpoints."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from bncheck.errors import BncheckError

if TYPE_CHECKING:
    import onnx


def to_onnx_proto(module: nn.Module, example: Sequence[torch.Tensor],
                  input_names: Sequence[str]) -> onnx.ModelProto:
    """Export with BN nodes kept (no constant folding, training mode preserved), dynamic batch.

    Train/eval flags are the caller's: a Dropout left in train mode stays active in the graph.
    """
    # onnx is imported on use: a torch compare never exports, and should not pay for it.
    import onnx

    from bncheck.backends.onnxrt.graph import EXPORT_OPSET

    outputs = _output_count(module, example)
    out_names = [f"output_{i}" if outputs > 1 else "output" for i in range(outputs)]
    axes = {n: {0: "batch"} for n in [*input_names, *out_names]}
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), \
                redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, tuple(example), buf,  # type: ignore[arg-type]  # file objects work
                dynamo=False, opset_version=EXPORT_OPSET,
                do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE,
                input_names=list(input_names), output_names=out_names, dynamic_axes=axes,
            )
    except Exception as e:  # the exporter raises many types for unsupported models
        first = str(e).splitlines()[0]
        if "is not constant" in str(e):
            # Its first line is a node of TorchScript IR: what it means, in words.
            first = ("one of its layers computes a size (a padding, a kernel) from the input's "
                     "shape as it runs, which torch's ONNX exporter can write only as a constant")
        raise BncheckError(f"this model cannot be exported to ONNX: {first}") from e
    return onnx.load_from_string(buf.getvalue())


def _output_count(module: nn.Module, example: Sequence[torch.Tensor]) -> int:
    with torch.no_grad():
        out = module(*example)
    if isinstance(out, torch.Tensor):
        return 1
    if isinstance(out, (tuple, list)):
        return len(out)
    return 1


def save_pt2(module: nn.Module, example: Sequence[torch.Tensor], path: Path,
             batch_limit: int | None = None) -> None:
    """torch.export with a dynamic batch dimension from 1 up to ``batch_limit``.

    A .pt2 input exported with a bounded batch (``Dim('batch', max=1024)``) keeps its bound:
    its graph asserts it, and an unbounded Dim would violate that.
    """
    batch = torch.export.Dim("batch", min=1, max=batch_limit) if batch_limit else \
        torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module.eval(), tuple(example), dynamic_shapes=shapes)
            torch.export.save(ep, str(path))
    except Exception as e:  # export errors are diverse and long
        raise BncheckError(f"torch.export failed for this model: {str(e).splitlines()[0]}") from e
