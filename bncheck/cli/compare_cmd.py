"""bncheck compare: does eval mode behave as the model did in training, and what fixes it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from bncheck.cli.options import (
    AllowPickleOpt,
    ArchOpt,
    BatchSizeOpt,
    DataOpt,
    DeviceOpt,
    FailOnOpt,
    FormatOpt,
    ImageSizeOpt,
    LimitOpt,
    MeanOpt,
    ModelArg,
    StdOpt,
)
from bncheck.core.options import Device, FailOn, OutputFormat
from bncheck.errors import BncheckError

TrainBatchOpt = Annotated[int | None, typer.Option(
    "--train-batch-size", min=1,
    help="Batch size the model was trained with (default: estimated from running_var).")]
PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", metavar="OUT.png", help="Write a PNG of per-layer divergence and candidates.")]


def compare(
    model: ModelArg,
    data: DataOpt,
    train_batch_size: TrainBatchOpt = None,
    batch_size: BatchSizeOpt = 16,
    limit: LimitOpt = None,
    arch: ArchOpt = None,
    allow_pickle: AllowPickleOpt = False,
    format: FormatOpt = OutputFormat.TEXT,
    plot: PlotOpt = None,
    fail_on: FailOnOpt = FailOn.ERROR,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = "0",
    std: StdOpt = "1",
    device: DeviceOpt = Device.CPU,
) -> None:
    """Compare running statistics with batch and per-sample statistics on real inputs.

    The reference is the model as trained: BatchNorm on batch statistics at the
    training batch size. Eval mode, and each fix when eval is off, are measured
    against it; re-batching the reference gives the noise floor.

    Examples:

        bncheck compare generator.pt --data samples/

        bncheck compare model.onnx --data x.npy --train-batch-size 1 --format json

        bncheck compare w.pth --arch pkg.models:unet --data x.npz --plot r.png
    """
    from bncheck.backends.base import load_model
    from bncheck.cli.common import image_options
    from bncheck.core.compare import compare as run_compare
    from bncheck.core.data import open_for_model
    from bncheck.core.findings import exit_code, sort_findings
    from bncheck.core.inspection import inspect_model
    from bncheck.core.verdict import compare_findings, decide
    from bncheck.report.compare_text import render_comparison
    from bncheck.report.console import stdout_console
    from bncheck.report.inspect_text import summary_line
    from bncheck.report.json_out import comparison_doc, dumps
    from bncheck.report.progress import RichProgress, progress_for

    if plot is not None and plot.suffix.lower() != ".png":
        raise BncheckError(f"--plot {plot}: give a .png file name")
    image = image_options(image_size, mean, std)
    loaded = load_model(model, allow_pickle=allow_pickle, arch=arch, device=device)
    inspection = inspect_model(loaded)
    src, runnable = open_for_model(loaded, data, image, limit)
    progress = progress_for(format is OutputFormat.JSON)
    try:
        result = run_compare(runnable, src, batch_size=batch_size,
                             train_batch_size=train_batch_size, progress=progress)
    finally:
        if isinstance(progress, RichProgress):
            progress.close()
    verdict = decide(result)
    findings = sort_findings(inspection.findings + compare_findings(result, verdict))
    command = fix_command(model, verdict.mode, data, arch, allow_pickle)
    if plot is not None:
        from bncheck.report.plot import write_plot

        write_plot(result, verdict, plot)
    if format is OutputFormat.JSON:
        typer.echo(dumps(comparison_doc(inspection, result, verdict, findings, command)))
    else:
        console = stdout_console()
        console.print(summary_line(inspection))
        render_comparison(result, verdict, command, console)
    raise typer.Exit(exit_code(findings, fail_on))


def fix_command(model: Path, mode: str, data: Path, arch: str | None, allow_pickle: bool) -> str:
    """The exact ``bncheck rewrite`` command that applies the recommendation."""
    if mode == "none":
        return ""
    out = model.with_name(f"{model.stem.split('.')[0]}-{mode}.onnx")
    parts = ["bncheck", "rewrite", str(model), "--mode", mode, "-o", str(out), "--data", str(data)]
    if arch:
        parts += ["--arch", arch]
    if allow_pickle:
        parts.append("--allow-pickle")
    return shlex.join(parts)
