"""bncheck rewrite: apply a fix, export it, and verify it before reporting success."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bncheck.cli.options import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    AllowPickleOpt,
    ArchOpt,
    BatchSizeOpt,
    DeviceOpt,
    ImageSizeOpt,
    InputShapeOpt,
    LabelsOpt,
    LimitOpt,
    MeanOpt,
    ModelArg,
    NprocOpt,
    OptionalDataOpt,
    StdOpt,
    TargetsOpt,
    TrainBatchOpt,
    WorkersOpt,
)
from bncheck.core.network.options import DEFAULT_BATCH_SIZE, Device

ModeOpt = Annotated[str, typer.Option(
    "--mode", metavar="MODE[,MODE]", show_default=False,
    help="recalibrate | batch-stats | instance-norm | fold; comma-separated modes apply in "
         "order, e.g. recalibrate,fold.")]
OutOpt = Annotated[Path, typer.Option(
    "-o", "--output", metavar="OUT", show_default=False,
    help="Output file, format by suffix: .onnx, .pt2, .pt/.pth (recalibrate only) or "
         ".safetensors (from .safetensors).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")]
KeepDropoutOpt = Annotated[bool, typer.Option(
    "--keep-dropout", help="Keep Dropout active in the written .onnx, for models that rely on "
                           "test-time dropout for varied outputs (pix2pix).")]
ForceWorseOpt = Annotated[bool, typer.Option(
    "--force-worse", help="Write the model even when --labels/--targets show it does worse than "
                          "the original.")]



def rewrite(
    model: ModelArg,
    mode: ModeOpt,
    output: OutOpt,
    data: OptionalDataOpt = None,
    arch: ArchOpt = None,
    allow_pickle: AllowPickleOpt = False,
    force: ForceOpt = False,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    train_batch_size: TrainBatchOpt = None,
    limit: LimitOpt = None,
    labels: LabelsOpt = None,
    targets: TargetsOpt = None,
    force_worse: ForceWorseOpt = False,
    keep_dropout: KeepDropoutOpt = False,
    input_shape: InputShapeOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = DEFAULT_MEAN,
    std: StdOpt = DEFAULT_STD,
    device: DeviceOpt = Device.CPU,
    workers: WorkersOpt = 0,
    nproc_per_node: NprocOpt = 1,
) -> None:
    """Rewrite the model's normalization and export it, verified on sample data.

    The input is never modified; OUT is written atomically, only after the
    rewritten model passed its checks, and never replaced without --force.
    recalibrate gathers statistics as compare does: on batch statistics at the
    training batch size (--train-batch-size, else estimated), whatever
    --batch-size is. With --labels or --targets, a model that does worse than
    the original is not written unless --force-worse is given.

    Examples:

        bncheck rewrite gen.pt --mode instance-norm -o fixed.onnx --data samples/

        bncheck rewrite w.pth --arch pkg.models:resnet --mode recalibrate -o new.pth --data target.npy

        bncheck rewrite model.onnx --mode recalibrate,fold -o deploy.onnx --data x.npy

        bncheck rewrite cls.onnx --mode recalibrate -o new.onnx --data x.npy --labels y.npy

        bncheck rewrite w.pt --mode recalibrate -o new.pt --data x.npy --nproc-per-node 4
    """
    from bncheck.api import rewrite as run_rewrite
    from bncheck.backends.detect import detect_format
    from bncheck.cli.common import image_options, sample_shape
    from bncheck.cli.launching import check_single_launch
    from bncheck.report.console import reporting, stdout_console
    from bncheck.report.progress import shown_progress
    from bncheck.report.rewrite_text import render_rewrite
    from bncheck.rewriting.atomic import check_destination
    from bncheck.rewriting.matrix import check_output, parse_modes
    from bncheck.rewriting.run import GENERATED_SAMPLES

    # Everything that can be refused is refused before any work starts.
    check_single_launch(nproc_per_node)
    modes = parse_modes(mode)
    check_destination(output, [p for p in (model, data, labels, targets) if p is not None], force)
    check_output(detect_format(model), modes, output, keep_dropout)
    shape = sample_shape(input_shape, "--input-shape", max(batch_size, GENERATED_SAMPLES))
    image = image_options(image_size, mean, std, batch_size)
    with shown_progress(json_output=False) as progress:
        rewritten = run_rewrite(model, modes, data=data, train_batch_size=train_batch_size,
                                batch_size=batch_size, device=device, limit=limit,
                                labels=labels, targets=targets, image=image, input_shape=shape,
                                arch=arch, allow_pickle=allow_pickle, workers=workers, progress=progress)
    report = rewritten.save(output, force=force, keep_dropout=keep_dropout,
                            force_worse=force_worse)
    if reporting():
        render_rewrite(report, stdout_console())
    raise typer.Exit(0 if report.ok else 1)
