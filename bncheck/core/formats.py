"""Model file formats bncheck reads."""

from enum import StrEnum


class ModelFormat(StrEnum):
    """Model file formats bncheck reads."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "pt2"
    TORCH_SAVE = "torch-save"  # state_dict, nested checkpoint or pickled nn.Module
    SAFETENSORS = "safetensors"
    KERAS = "keras"  # Keras 3 .keras archive
    KERAS_H5 = "keras-h5"  # legacy HDF5: a whole model, or weights only (with --arch)


KERAS_FORMATS = (ModelFormat.KERAS, ModelFormat.KERAS_H5)
