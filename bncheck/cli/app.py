"""The bncheck command line: three thin commands behind one error boundary."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import typer
from typer.core import TyperGroup

from bncheck.cli.compare_cmd import compare
from bncheck.cli.inspect_cmd import inspect
from bncheck.cli.launching import (
    launch_request,
    run_launched,
    stop_worker_on_interrupt,
    worker_exit,
)
from bncheck.cli.rewrite_cmd import rewrite
from bncheck.core.distributed.launch_records import record_error
from bncheck.errors import BncheckError
from bncheck.extras import install_hint, missing_package
from bncheck.report.console import error_line

# Module names that are not bncheck's (a warnings filter matches from the start of the name).
NOT_BNCHECK = r"(?!bncheck(\.|$))"


class _ErrorBoundary(TyperGroup):
    """User errors become one line on stderr and exit 2; bugs stay tracebacks."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command, translating BncheckError."""
        try:
            with warnings.catch_warnings():
                # Libraries' deprecation chatter is not the user's business; debug mode shows
                # it. A warning bncheck's own code raises (or triggers) is a bug to fix, and is
                # left to the caller's filters: the tests turn it into an error.
                if os.environ.get("BNCHECK_DEBUG") != "1":
                    warnings.filterwarnings("ignore", module=NOT_BNCHECK)
                return super().invoke(ctx)
        except (BncheckError, ModuleNotFoundError) as e:
            # A missing optional package, wherever it is imported, is an install to make.
            missing = missing_package(e) if isinstance(e, ModuleNotFoundError) else None
            if os.environ.get("BNCHECK_DEBUG") == "1" or \
                    (isinstance(e, ModuleNotFoundError) and missing is None):
                raise
            message = str(e) if missing is None else f"this {install_hint(missing)}"
            error_line(message)
            record_error(message)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_ErrorBoundary,
    name="bncheck",
    help="Find and fix BatchNorm train/eval mismatches in PyTorch and ONNX models.\n\n"
         "  bncheck inspect model.pt\n\n"
         "  bncheck compare model.pt --data samples/\n\n"
         "  bncheck rewrite model.pt --mode instance-norm -o fixed.onnx --data samples/",
    no_args_is_help=True,
    # Plain help: rich's help formatter costs 0.15 s of start-up on every --help.
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("inspect")(inspect)
app.command("compare")(compare)
app.command("rewrite")(rewrite)


def main() -> None:
    """Console-script entry point; ``--nproc-per-node N`` becomes a job of N processes."""
    request = launch_request(sys.argv[1:])
    if request is not None:
        sys.exit(run_launched(*request))
    stop_worker_on_interrupt()
    try:
        app()
    except SystemExit as e:
        sys.exit(worker_exit(e.code))
