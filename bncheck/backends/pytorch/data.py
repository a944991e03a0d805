"""Sample data saved with torch.save: read with weights_only, as numpy arrays."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from bncheck.errors import BncheckError, reading


def read_tensor_file(path: Path) -> list[np.ndarray]:
    """The tensor (or list/dict of tensors) in ``path``; never unpickles code."""
    try:
        with reading(path, "a torch.save'd tensor", option="--data"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except BncheckError as e:
        if isinstance(e.__cause__, pickle.UnpicklingError):
            raise BncheckError(f"--data {path} holds pickled Python objects, not tensors; save "
                               "the inputs with torch.save(tensor) or as .npy") from e.__cause__
        raise
    items = obj if isinstance(obj, (list, tuple)) else list(obj.values()) \
        if isinstance(obj, dict) else [obj]
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise BncheckError(f"--data {path}: expected a tensor (or a list/dict of tensors)")
    return [tensor_to_numpy(t, f"--data {path}") for t in items]


def tensor_to_numpy(t: torch.Tensor, what: str) -> np.ndarray:
    """A batch tensor as numpy: dense, on the CPU, float32 where numpy has no such float."""
    if t.dim() == 0:
        raise BncheckError(f"{what}: a single number (0-d tensor) is not a batch of samples")
    if t.layout != torch.strided:
        if t.is_quantized or t.numel() > MAX_DENSE:
            raise BncheckError(f"{what}: a {t.layout} tensor of {t.numel()} elements; save it "
                               "dense")
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    if t.dtype in (torch.bfloat16, torch.float16) or t.is_complex():
        if t.is_complex():
            raise BncheckError(f"{what}: complex values are not model inputs bncheck can feed")
        t = t.float()
    return t.detach().cpu().numpy()


# A sparse tensor is densified only up to this many elements (1 GiB of float32).
MAX_DENSE = 1 << 28
