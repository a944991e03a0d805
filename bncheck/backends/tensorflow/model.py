"""A TensorFlow graph as the ONNX backend's model, remembering what TensorFlow ran."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bncheck.backends.onnxrt.hidden import listed
from bncheck.backends.onnxrt.model import OnnxModel
from bncheck.backends.tensorflow.convert import to_onnx
from bncheck.backends.tensorflow.graphs import (
    KERAS_DEFAULT_MOMENTUM,
    import_tensorflow,
    read_graph,
)
from bncheck.core.network.formats import ModelFormat
from bncheck.core.network.layers import NormLayer
from bncheck.core.network.model import InputSpec
from bncheck.core.network.options import Device

TRAINING_NOTE = ("the TensorFlow graph runs {n} BatchNorm layer(s) with is_training=True at "
                 "inference (the released pix2pix pattern): they normalize with the statistics of "
                 "the batch they are given, so at batch size 1 they are instance normalization. "
                 "bncheck converted them to eval mode (is_training=False, the moving averages) "
                 "and compares that with the training behaviour")


REBUILT_NOTE = ("BatchNorm {layers} {were} written as elementwise ops (tf.nn.batch_normalization, "
                "as Keras 3 exports it); bncheck read {them} as BatchNormalization, with Keras' "
                f"default momentum {KERAS_DEFAULT_MOMENTUM}, which the export does not record")
UNMAPPED = ("the graph holds the running statistics of {layers}, which bncheck could not map to "
            "a BatchNorm (written as elementwise ops over other than NHWC images): give bncheck "
            "the .keras file, or a SavedModel whose BatchNorm runs on images")


class TensorFlowModel(OnnxModel):
    """The ONNX form of a TensorFlow graph; its images are channels-last, as TensorFlow's are."""

    def __init__(self, proto: object, path: Path, fmt: ModelFormat, training: frozenset[str],
                 notes: tuple[str, ...], device: Device = Device.CPU,
                 hidden: tuple[str, ...] = ()) -> None:
        super().__init__(proto, path, device, fmt=fmt, notes=notes,  # type: ignore[arg-type]
                         hidden=hidden)
        self.training = training
        # A TensorFlow file is the framework's own: there is no export to redo.
        self.keep_bn = None

    @classmethod
    def load(cls, path: Path, device: Device = Device.CPU) -> TensorFlowModel:
        """Read and convert ``path``; a SavedModel folder, a frozen .pb or a checkpoint."""
        from bncheck.backends.detect import detect_format

        fmt = detect_format(path)
        tf, _ = import_tensorflow()
        converted = to_onnx(tf, read_graph(path, fmt))
        notes: tuple[str, ...] = ()
        if converted.training:
            notes = (TRAINING_NOTE.format(n=len(converted.training)),)
        if converted.rebuilt:
            many = len(converted.rebuilt) > 1
            notes = (*notes, REBUILT_NOTE.format(layers=listed(converted.rebuilt),
                                                 were="were" if many else "was",
                                                 them="them" if many else "it"))
        hidden = (UNMAPPED.format(layers=listed(converted.unmapped)),) \
            if converted.unmapped else ()
        model = cls(converted.proto, path, fmt, converted.training, notes, device, hidden)
        kept = sum(1 for layer in model.layers() if layer.kind == "BatchNormalization")
        if kept != converted.tf_norms:
            model.notes = (*model.notes, f"the TensorFlow graph has {converted.tf_norms} "
                           f"FusedBatchNorm op(s); {kept} reached the ONNX form")
        return model

    def layers(self) -> list[NormLayer]:
        """The layers, with those TensorFlow ran in training mode marked so."""
        return [dataclasses.replace(layer, training_mode=True, options=(("is_training", True),))
                if layer.name in self.training else layer for layer in super().layers()]

    def inputs(self) -> list[InputSpec]:
        """Image inputs (rank 4) are NHWC, TensorFlow's default layout."""
        return [dataclasses.replace(s, channels_last=len(s.shape) == 4) for s in super().inputs()]

