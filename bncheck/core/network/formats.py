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
    TF_SAVED_MODEL = "tf-savedmodel"  # a folder with saved_model.pb
    TF_GRAPH = "tf-graph"  # a frozen GraphDef .pb
    TF_CHECKPOINT = "tf-checkpoint"  # a TF1 checkpoint with its .meta graph


KERAS_FORMATS = (ModelFormat.KERAS, ModelFormat.KERAS_H5)
TF_FORMATS = (ModelFormat.TF_SAVED_MODEL, ModelFormat.TF_GRAPH, ModelFormat.TF_CHECKPOINT)
