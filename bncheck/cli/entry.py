"""The console script's entry point: imports the command line, then runs it.

Importing typer, numpy and the commands takes a few tenths of a second. A Ctrl-C in that time
is the user's, as it is later, so it ends bncheck the same way (exit 130, no traceback).
"""

from __future__ import annotations

import sys

# The shell's exit status for a process ended by SIGINT (128 + 2), as typer gives later on.
INTERRUPTED = 130


def main() -> None:
    """Run ``bncheck`` (``bncheck.cli.app.main``), stopping quietly if interrupted on import."""
    try:
        from bncheck.cli.app import main as run
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    run()
