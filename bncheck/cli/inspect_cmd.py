"""bncheck inspect: the normalization layers of a model, from its weights alone."""

from __future__ import annotations

import typer

from bncheck.cli.options import AllowPickleOpt, ArchOpt, FailOnOpt, FormatOpt, ModelArg
from bncheck.core.options import FailOn, OutputFormat


def inspect(
    model: ModelArg,
    arch: ArchOpt = None,
    allow_pickle: AllowPickleOpt = False,
    format: FormatOpt = OutputFormat.TEXT,
    fail_on: FailOnOpt = FailOn.ERROR,
) -> None:
    """List every normalization layer and the problems visible without data.

    Reads only the weights: no sample data, no forward pass.

    Examples:

        bncheck inspect model.pt

        bncheck inspect model.onnx --format json

        bncheck inspect weights.pth --arch mypkg.models:resnet18 --fail-on warn
    """
    from bncheck.backends.base import load_model
    from bncheck.core.findings import exit_code
    from bncheck.core.inspection import inspect_model
    from bncheck.report.console import stdout_console
    from bncheck.report.inspect_text import render_inspection
    from bncheck.report.json_out import dumps, inspection_doc

    result = inspect_model(load_model(model, allow_pickle=allow_pickle, arch=arch))
    if format is OutputFormat.JSON:
        typer.echo(dumps(inspection_doc(result)))
    else:
        render_inspection(result, stdout_console())
    raise typer.Exit(exit_code(result.findings, fail_on))
