"""bncheck inspect: the normalization layers of a model, from its weights alone."""

from __future__ import annotations

import typer

from bncheck.cli.options import AllowPickleOpt, ArchOpt, FailOnOpt, FormatOpt, ModelArg
from bncheck.core.network.options import FailOn, OutputFormat


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
    from bncheck.api import inspect as run_inspect
    from bncheck.core.judgement.findings import exit_code
    from bncheck.core.results import inspection_json
    from bncheck.report.console import emit_json, stdout_console

    result = run_inspect(model, arch=arch, allow_pickle=allow_pickle)
    if format is OutputFormat.JSON:
        emit_json(inspection_json(result))
    else:
        from bncheck.report.inspect_text import render_inspection  # rich: text reports only

        render_inspection(result, stdout_console())
    raise typer.Exit(exit_code(result.findings, fail_on))
