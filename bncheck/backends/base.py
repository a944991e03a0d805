"""Loading a model with the backend its content calls for; torch is imported only if needed."""

from __future__ import annotations

from pathlib import Path

from bncheck.backends.detect import detect_format
from bncheck.core.network.formats import KERAS_FORMATS, TF_FORMATS, ModelFormat
from bncheck.core.network.model import Model
from bncheck.core.network.options import Device
from bncheck.errors import BncheckError
from bncheck.extras import requires

# What each format is called in the sentence naming a missing extra, and that extra.
_NAMES = {ModelFormat.ONNX: "an ONNX model", ModelFormat.TORCHSCRIPT: "TorchScript",
          ModelFormat.EXPORTED_PROGRAM: "a torch.export program",
          ModelFormat.TORCH_SAVE: "a PyTorch checkpoint", ModelFormat.SAFETENSORS: "safetensors",
          ModelFormat.KERAS: "a Keras model", ModelFormat.KERAS_H5: "a Keras .h5 file",
          ModelFormat.TF_SAVED_MODEL: "a TensorFlow SavedModel",
          ModelFormat.TF_GRAPH: "a TensorFlow graph", ModelFormat.TF_CHECKPOINT:
          "a TensorFlow checkpoint"}


def load_model(path: Path, *, allow_pickle: bool = False, arch: str | None = None,
               device: Device = Device.CPU) -> Model:
    """Load ``path`` with the backend its content calls for; torch is imported only if needed.

    A backend whose extra is not installed is named in one sentence.
    """
    fmt = detect_format(path)
    extra = "keras" if fmt in KERAS_FORMATS else "tensorflow" if fmt in TF_FORMATS else \
        None if fmt is ModelFormat.ONNX else "torch"
    with requires(f"{path} ({_NAMES[fmt]})", extra):
        return _load(path, fmt, allow_pickle=allow_pickle, arch=arch, device=device)


def _load(path: Path, fmt: ModelFormat, *, allow_pickle: bool, arch: str | None,
          device: Device) -> Model:
    if fmt is ModelFormat.ONNX:
        if arch is not None:
            raise BncheckError(
                f"--arch applies to PyTorch state_dicts; {path} is ONNX and carries its own graph"
            )
        from bncheck.backends.onnxrt.model import OnnxModel

        return OnnxModel.load(path, device=device)
    if fmt in TF_FORMATS:
        if arch is not None:
            raise BncheckError(f"--arch applies to weights without a graph; {path} is a "
                               "TensorFlow graph")
        from bncheck.backends.tensorflow.model import TensorFlowModel

        return TensorFlowModel.load(path, device=device)
    if fmt in KERAS_FORMATS:
        if device is Device.CUDA:
            raise BncheckError(f"--device cuda: bncheck runs Keras models on the CPU; drop "
                               f"--device, or export {path.name} to ONNX to run it on a GPU")
        from bncheck.backends.keras.load import load_keras_file
        from bncheck.backends.keras.model import KerasModel

        keras_model = load_keras_file(path, allow_pickle=allow_pickle, arch=arch)
        return KerasModel.of(path, fmt, keras_model)
    from bncheck.backends.pytorch.model import load_torch_model

    return load_torch_model(path, fmt, allow_pickle=allow_pickle, arch=arch, device=device)

