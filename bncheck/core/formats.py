"""Model file formats bncheck reads."""

from enum import StrEnum


class ModelFormat(StrEnum):
    """Model file formats bncheck reads."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "pt2"
    TORCH_SAVE = "torch-save"  # state_dict, nested checkpoint or pickled nn.Module
    SAFETENSORS = "safetensors"
