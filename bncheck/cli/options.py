"""Option aliases shared by the commands (typer ``Annotated`` style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bncheck.core.network.options import Device, FailOn, OutputFormat

ModelArg = Annotated[Path, typer.Argument(
    metavar="MODEL",
    help="Model file: .onnx, TorchScript, torch.export .pt2, state_dict/checkpoint (.pt/.pth), "
         ".safetensors, a pickled nn.Module (with --allow-pickle); Keras .keras or .h5 "
         "(bncheck[keras]); a TensorFlow SavedModel folder, frozen .pb or TF1 checkpoint with "
         "its .meta (bncheck[tensorflow]).",
    show_default=False)]
ArchOpt = Annotated[str | None, typer.Option(
    "--arch", metavar="MOD:FN",
    help="Build the architecture for a bare state_dict (or a Keras weights .h5, or a Keras "
         "model with custom layers) with package.module:factory (the current directory is "
         "importable).")]
AllowPickleOpt = Annotated[bool, typer.Option(
    "--allow-pickle", help="Allow loading a fully pickled model, or a Keras model with a Lambda "
                           "layer (Keras' safe_mode off). Either runs code from the file: only "
                           "for files you trust.")]
FormatOpt = Annotated[OutputFormat, typer.Option(
    "--format", help="text for people, json for machines (one document on stdout).")]
FailOnOpt = Annotated[FailOn, typer.Option(
    "--fail-on", help="Exit 1 when a finding is at or above this severity; 'mismatch' exits 1 "
                      "only for compare's mismatch verdict (not for inconclusive).")]
DeviceOpt = Annotated[Device, typer.Option(
    "--device", help="Where torch models run (ONNX uses the CUDA provider when present; Keras "
                     "and TensorFlow models run on the CPU).")]
DataOpt = Annotated[Path, typer.Option(
    "--data", metavar="PATH", show_default=False,
    help="Sample inputs: .npy, .npz (one array per input name), a torch.save'd tensor, a "
         "folder of images, or package.module:factory returning a Dataset or batches.")]
WorkersOpt = Annotated[int, typer.Option(
    "--workers", min=0, help="Processes that read images or Dataset items ahead of the model.")]
OptionalDataOpt = Annotated[Path | None, typer.Option(
    "--data", metavar="PATH",
    help="Sample inputs (required for recalibrate; otherwise used to verify the output).")]
BatchSizeOpt = Annotated[int, typer.Option(
    "--batch-size", min=1, help="Batch size for running the model (and deployment batch size "
                                "for batch-stats).")]
LimitOpt = Annotated[int | None, typer.Option(
    "--limit", min=1, help="Use at most this many samples.")]
ImageSizeOpt = Annotated[str | None, typer.Option(
    "--image-size", metavar="H,W", help="Resize images to H,W (default: the model's fixed "
                                        "input size, else each image's own).")]
MeanOpt = Annotated[str, typer.Option(
    "--mean", metavar="M[,M,M]", help="Per-channel mean subtracted after scaling images to [0,1].")]
StdOpt = Annotated[str, typer.Option(
    "--std", metavar="S[,S,S]", help="Per-channel std divided after subtracting --mean.")]
TrainBatchOpt = Annotated[int | None, typer.Option(
    "--train-batch-size", min=1,
    help="Batch size the model was trained with (default: estimated from running_var).")]
InputShapeOpt = Annotated[str | None, typer.Option(
    "--input-shape", metavar="C,H,W", help="Per-sample input shape in the model's layout (H,W,C "
                                           "for Keras and TensorFlow), where it does not "
                                           "declare one (a state_dict with --arch); also sizes "
                                           "generated verification inputs without --data.")]
LabelsOpt = Annotated[Path | None, typer.Option(
    "--labels", metavar="FILE",
    help="Class id per sample (.npy, .npz or text): measure accuracy for eval and each fix; a "
         "fix that lowers it is never recommended (or written, for rewrite).")]
TargetsOpt = Annotated[Path | None, typer.Option(
    "--targets", metavar="FILE",
    help="Expected output per sample (.npy or .npz): measure the mean absolute error instead.")]
NprocOpt = Annotated[int, typer.Option(
    "--nproc-per-node", min=1, metavar="N",
    help="Run as N processes on this machine (torch's elastic launcher, gloo on CPU, one GPU "
         "each with --device cuda), with the figures of one process. The exit code is the "
         "job's (0, 1 or 2), not torchrun's.")]

# Defaults that the printed fix command leaves out.
DEFAULT_MEAN = "0"
DEFAULT_STD = "1"
