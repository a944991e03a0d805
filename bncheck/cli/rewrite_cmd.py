"""bncheck rewrite: apply a fix, export it, and verify it before reporting success."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bncheck.cli.options import (
    AllowPickleOpt,
    ArchOpt,
    BatchSizeOpt,
    DeviceOpt,
    ImageSizeOpt,
    LimitOpt,
    MeanOpt,
    ModelArg,
    OptionalDataOpt,
    StdOpt,
)
from bncheck.core.options import Device
from bncheck.errors import BncheckError

ModeOpt = Annotated[str, typer.Option(
    "--mode", metavar="MODE[,MODE]", show_default=False,
    help="recalibrate | batch-stats | instance-norm | fold; comma-separated modes apply in "
         "order, e.g. recalibrate,fold.")]
OutOpt = Annotated[Path, typer.Option(
    "-o", "--output", metavar="OUT", show_default=False,
    help="Output file, format by suffix: .onnx, .pt2, .pt/.pth (recalibrate only) or "
         ".safetensors (from .safetensors).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")]
InputShapeOpt = Annotated[str | None, typer.Option(
    "--input-shape", metavar="C,H,W", help="Per-sample input shape for generated verification "
                                           "inputs when there is no --data.")]


def rewrite(
    model: ModelArg,
    mode: ModeOpt,
    output: OutOpt,
    data: OptionalDataOpt = None,
    arch: ArchOpt = None,
    allow_pickle: AllowPickleOpt = False,
    force: ForceOpt = False,
    batch_size: BatchSizeOpt = 16,
    limit: LimitOpt = None,
    input_shape: InputShapeOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = "0",
    std: StdOpt = "1",
    device: DeviceOpt = Device.CPU,
) -> None:
    """Rewrite the model's normalization and export it, verified on sample data.

    The input is never modified; OUT is written atomically, only after the
    rewritten model passed its checks, and never replaced without --force.

    Examples:

        bncheck rewrite gen.pt --mode instance-norm -o fixed.onnx --data samples/

        bncheck rewrite w.pth --arch pkg.models:resnet --mode recalibrate -o new.pth --data target.npy

        bncheck rewrite model.onnx --mode recalibrate,fold -o deploy.onnx --data x.npy
    """
    from bncheck.backends.base import load_model
    from bncheck.backends.detect import detect_format
    from bncheck.cli.common import image_options, ints
    from bncheck.report.console import stdout_console
    from bncheck.report.progress import RichProgress, progress_for
    from bncheck.report.rewrite_text import render_rewrite
    from bncheck.rewrite.atomic import check_destination
    from bncheck.rewrite.matrix import check_output, parse_modes
    from bncheck.rewrite.run import run_rewrite

    modes = parse_modes(mode)
    check_destination(output, [model], force)
    check_output(detect_format(model), modes, output)
    if data is None and any(m.value == "recalibrate" for m in modes):
        raise BncheckError("--mode recalibrate needs --data: statistics are re-estimated on it")
    shape = ints(input_shape, "--input-shape") if input_shape else None
    image = image_options(image_size, mean, std)
    loaded = load_model(model, allow_pickle=allow_pickle, arch=arch, device=device)
    progress = progress_for(json_output=False)
    try:
        report = run_rewrite(loaded, modes, output, data=data, image=image, limit=limit,
                             batch_size=batch_size, input_shape=shape, allow_pickle=allow_pickle,
                             progress=progress)
    finally:
        if isinstance(progress, RichProgress):
            progress.close()
    render_rewrite(report, stdout_console())
    raise typer.Exit(0 if report.ok else 1)
