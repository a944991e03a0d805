"""Which input format, mode and output suffix combine, checked before any work starts."""

from __future__ import annotations

from pathlib import Path

from bncheck.core.network.formats import KERAS_FORMATS, TF_FORMATS, ModelFormat
from bncheck.core.network.options import USER_MODES, RewriteMode
from bncheck.errors import BncheckError

CHECKPOINT_SUFFIXES = (".pt", ".pth")
OUTPUT_SUFFIXES = (".onnx", ".pt2", *CHECKPOINT_SUFFIXES, ".safetensors", ".keras")


def check_output(fmt: ModelFormat, modes: list[RewriteMode], out: Path,
                 keep_dropout: bool = False) -> None:
    """Raise a BncheckError naming what to use instead when the combination cannot work."""
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise BncheckError(f"-o {out}: unknown suffix {suffix or '(none)'}; use .onnx, .pt2, "
                           ".pt/.pth, .safetensors or .keras")
    if fmt in KERAS_FORMATS:
        _check_keras_output(out, suffix, keep_dropout)
        return
    if suffix == ".keras":
        raise BncheckError(f"-o {out}: .keras output needs a Keras input (.keras or .h5); write "
                           ".onnx")
    if keep_dropout and suffix != ".onnx":
        raise BncheckError(f"-o {out}: --keep-dropout writes .onnx (Dropout nodes with "
                           "training_mode on); a torch model's dropout is yours to switch on")
    if suffix == ".onnx":
        return
    if fmt is ModelFormat.ONNX:
        raise BncheckError(f"-o {out}: an ONNX input can only be written as .onnx")
    if fmt in TF_FORMATS:
        raise BncheckError(f"-o {out}: a TensorFlow graph is rewritten as its ONNX form; "
                           "write .onnx")
    if fmt is ModelFormat.TORCHSCRIPT:
        raise BncheckError(f"-o {out}: TorchScript is rewritten through ONNX; write .onnx, or "
                           "rewrite the state_dict with --arch to get .pt2/.pt")
    if suffix == ".pt2":
        return
    if any(m is not RewriteMode.RECALIBRATE for m in modes):
        changed = ", ".join(m.value for m in modes if m is not RewriteMode.RECALIBRATE)
        raise BncheckError(f"-o {out}: a checkpoint keeps the original architecture, which "
                           f"{changed} replaces; write .onnx or .pt2")
    if fmt is ModelFormat.EXPORTED_PROGRAM:
        raise BncheckError(f"-o {out}: a .pt2 input has no checkpoint to keep; write .pt2")
    if suffix == ".safetensors" and fmt is not ModelFormat.SAFETENSORS:
        raise BncheckError(f"-o {out}: .safetensors output needs a .safetensors input; "
                           "use .pt/.pth")
    if suffix in CHECKPOINT_SUFFIXES and fmt is ModelFormat.SAFETENSORS:
        raise BncheckError(f"-o {out}: a .safetensors input is written back as .safetensors")


def _check_keras_output(out: Path, suffix: str, keep_dropout: bool) -> None:
    if suffix not in (".onnx", ".keras"):
        raise BncheckError(f"-o {out}: a Keras model is written as .keras or .onnx")
    if keep_dropout:
        raise BncheckError(f"-o {out}: --keep-dropout is for torch and ONNX models; a Keras "
                           "model's Dropout layers are yours to call with training=True")


def parse_modes(text: str) -> list[RewriteMode]:
    """``recalibrate,fold`` -> modes in order."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    allowed = [m.value for m in USER_MODES]
    modes = []
    for n in names:
        if n not in allowed:
            raise BncheckError(f"--mode {n}: not a mode; choose from {', '.join(allowed)} "
                               "(comma-separated to chain)")
        modes.append(RewriteMode(n))
    if not modes:
        raise BncheckError(f"--mode is empty; choose from {', '.join(allowed)}")
    return modes
