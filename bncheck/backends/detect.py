"""Tell a model file's format from its bytes (zip layout, pickle, protobuf, safetensors header)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from bncheck.core.inputs.paths import exists, shown
from bncheck.core.network.formats import ModelFormat
from bncheck.errors import BncheckError, reading

_PICKLE_PROTOCOL_BYTE = 0x80
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def detect_format(path: Path) -> ModelFormat:
    """Return the format of ``path`` judged by content, or raise a BncheckError saying why not."""
    if not exists(path, "model"):
        if path.with_name(path.name + ".index").exists():
            return ModelFormat.TF_CHECKPOINT  # a TF1 checkpoint named by its prefix
        raise BncheckError(f"{shown(path)}: no such file")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return ModelFormat.TF_SAVED_MODEL
        raise BncheckError(f"{path} is a folder but not a TensorFlow SavedModel (no "
                           "saved_model.pb); give a model file (.onnx, .pt, .pt2, .safetensors, "
                           ".keras, .h5, .pb) or a SavedModel folder")
    if path.suffix in (".meta", ".index"):
        return ModelFormat.TF_CHECKPOINT
    size = path.stat().st_size
    if size == 0:
        raise BncheckError(f"{path} is empty (0 bytes); check that it was written completely")
    with reading(path, "a model file"), path.open("rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return _zip_format(path)
    if head[:8] == _HDF5_SIGNATURE:
        return ModelFormat.KERAS_H5
    if head[0] == _PICKLE_PROTOCOL_BYTE:
        return ModelFormat.TORCH_SAVE
    if _looks_safetensors(path, head, size):
        return ModelFormat.SAFETENSORS
    if _looks_onnx(head) or path.suffix.lower() == ".onnx":
        return ModelFormat.ONNX
    if path.suffix.lower() == ".pb":
        return ModelFormat.TF_GRAPH
    raise BncheckError(
        f"{path} is not a model bncheck can read (expected ONNX, TorchScript, torch.export .pt2, "
        "a torch.save checkpoint, .safetensors, .keras, Keras .h5, a TensorFlow .pb, SavedModel or "
        "checkpoint)"
    )


def _zip_format(path: Path) -> ModelFormat:
    with reading(path, "a zip archive",
                 advice="the file is probably truncated: copy or save it again"), \
            zipfile.ZipFile(path) as z:
        names = z.namelist()
    if "config.json" in names and "metadata.json" in names:
        return ModelFormat.KERAS
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if any(t.startswith("models/") and t.endswith(".json") for t in tails) or any(
        t.startswith("serialized_exported_program") for t in tails
    ):
        return ModelFormat.EXPORTED_PROGRAM
    if any(t.startswith("code/") for t in tails) or "constants.pkl" in tails:
        return ModelFormat.TORCHSCRIPT
    if "data.pkl" in tails:
        return ModelFormat.TORCH_SAVE
    if path.suffix.lower() == ".keras":
        raise BncheckError(f"{path} is a zip archive without a Keras model's config.json and "
                           "metadata.json; save it again with model.save()")
    raise BncheckError(f"{path} is a zip archive but not a PyTorch checkpoint, TorchScript, .pt2 "
                       "or .keras")


def _looks_safetensors(path: Path, head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if n <= 1 or n + 8 > size or head[8:9] != b"{":
        return False
    with path.open("rb") as f:
        f.seek(8)
        try:
            json.loads(f.read(n))
        except ValueError:
            return False
    return True


def _looks_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint) = tag 0x08, and an ir_version 1..20.
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 20
