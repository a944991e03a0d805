"""bncheck compare: does eval mode behave as the model did in training, and what fixes it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from bncheck.cli.options import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    AllowPickleOpt,
    ArchOpt,
    BatchSizeOpt,
    DataOpt,
    DeviceOpt,
    FailOnOpt,
    FormatOpt,
    ImageSizeOpt,
    InputShapeOpt,
    LabelsOpt,
    LimitOpt,
    MeanOpt,
    ModelArg,
    NprocOpt,
    StdOpt,
    TargetsOpt,
    TrainBatchOpt,
    WorkersOpt,
)
from bncheck.core.judgement.verdict import FixMode
from bncheck.core.network.options import DEFAULT_BATCH_SIZE, Device, FailOn, OutputFormat
from bncheck.core.stats.batchsize import BatchSizeSource
from bncheck.errors import BncheckError

PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", metavar="OUT.png", help="Write a PNG of per-layer divergence and candidates.")]


def compare(
    model: ModelArg,
    data: DataOpt,
    train_batch_size: TrainBatchOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    limit: LimitOpt = None,
    arch: ArchOpt = None,
    allow_pickle: AllowPickleOpt = False,
    format: FormatOpt = OutputFormat.TEXT,
    plot: PlotOpt = None,
    fail_on: FailOnOpt = FailOn.ERROR,
    labels: LabelsOpt = None,
    targets: TargetsOpt = None,
    input_shape: InputShapeOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = DEFAULT_MEAN,
    std: StdOpt = DEFAULT_STD,
    device: DeviceOpt = Device.CPU,
    workers: WorkersOpt = 0,
    nproc_per_node: NprocOpt = 1,
) -> None:
    """Compare running statistics with batch and per-sample statistics on real inputs.

    The reference is the model as trained: BatchNorm on batch statistics at the
    training batch size. Eval mode, and each fix when eval is off, are measured
    against it; re-batching the reference gives the noise floor. The verdict is
    ok, mismatch (an input shift, or stats that disagree with training) or
    inconclusive.

    Examples:

        bncheck compare generator.pt --data samples/

        bncheck compare model.onnx --data x.npy --train-batch-size 1 --format json

        bncheck compare classifier.onnx --data x.npy --labels y.npy

        bncheck compare w.pth --arch pkg.models:unet --data x.npz --plot r.png

        bncheck compare model.pt --data x.npy --nproc-per-node 4 --format json > report.json
    """
    from bncheck.api import compare as run_compare
    from bncheck.cli.common import image_options, sample_shape
    from bncheck.cli.launching import check_single_launch
    from bncheck.core.judgement.findings import exit_code
    from bncheck.report.console import emit_json, reporting, stdout_console
    from bncheck.report.progress import shown_progress

    check_single_launch(nproc_per_node)
    if plot is not None and plot.suffix.lower() != ".png":
        raise BncheckError(f"--plot {plot}: give a .png file name")
    image = image_options(image_size, mean, std, batch_size)
    shape = sample_shape(input_shape, "--input-shape", batch_size)
    with shown_progress(json_output=format is OutputFormat.JSON) as progress:
        result = run_compare(model, data, train_batch_size=train_batch_size,
                             batch_size=batch_size, device=device, limit=limit, labels=labels,
                             targets=targets, image=image, input_shape=shape, arch=arch,
                             allow_pickle=allow_pickle, workers=workers, progress=progress)
    options = _passthrough(arch=arch, allow_pickle=allow_pickle, image_size=image_size, mean=mean,
                           std=std, limit=limit, batch_size=batch_size, device=device,
                           labels=labels, targets=targets, input_shape=input_shape)
    train = result.measurements.train_batch
    if train.source is not BatchSizeSource.UNUSED:
        # recalibrate then gathers its statistics exactly as compare did.
        options += ["--train-batch-size", str(train.value)]
    verdict = result.verdict
    commands: dict[FixMode, str] = {mode: fix_command(model, mode, data, options)
                for mode in (verdict.mode, verdict.conditional) if mode is not FixMode.NONE}
    code = exit_code(list(result.findings), fail_on)
    if not reporting():
        raise typer.Exit(code)  # under torchrun rank 0 reports for all
    if plot is not None:
        from bncheck.report.plot import write_plot

        write_plot(result.measurements, verdict, plot)
    if format is OutputFormat.JSON:
        emit_json(result.to_json(commands))
    else:
        from bncheck.report.compare_text import render_comparison  # rich: text reports only

        render_comparison(result, commands, stdout_console())
    raise typer.Exit(code)


def _passthrough(*, arch: str | None, allow_pickle: bool, image_size: str | None, mean: str,
                 std: str, limit: int | None, batch_size: int, device: Device,
                 labels: Path | None, targets: Path | None, input_shape: str | None) -> list[str]:
    """The options a rewrite needs to see the same model and the same samples as compare."""
    opts: list[str] = []
    if arch:
        opts += ["--arch", arch]
    if allow_pickle:
        opts.append("--allow-pickle")
    if image_size:
        opts += ["--image-size", image_size]
    if input_shape:
        opts += ["--input-shape", input_shape]
    if mean != DEFAULT_MEAN:
        opts += ["--mean", mean]
    if std != DEFAULT_STD:
        opts += ["--std", std]
    if limit is not None:
        opts += ["--limit", str(limit)]
    if batch_size != DEFAULT_BATCH_SIZE:
        opts += ["--batch-size", str(batch_size)]
    if device is not Device.CPU:
        opts += ["--device", device.value]
    if labels is not None:
        opts += ["--labels", str(labels)]
    if targets is not None:
        opts += ["--targets", str(targets)]
    return opts


def fix_command(model: Path, mode: FixMode, data: Path, options: list[str]) -> str:
    """The exact ``bncheck rewrite`` command that applies ``mode``, shell-quoted."""
    # Only the file's own suffix goes: "ch_ppocr_mobile_v2.0_cls_infer" keeps its dot.
    out = model.with_name(f"{model.stem}-{mode.value}.onnx")
    return shlex.join(["bncheck", "rewrite", str(model), "--mode", mode.value, "-o", str(out),
                       "--data", str(data), *options])
