"""Seconds spent inside onnxruntime's ``InferenceSession.run`` calls, printed on stdout.

``ort_runs.py compare MODEL DATA BS TRAIN_BS``: the calls of one ``bncheck compare`` (its CLI,
in this process); ``ort_runs.py plain MODEL DATA BS``: those of plain inference over the same
batches. Start-up, session creation and everything bncheck does between the calls are left out:
the wall-time ratio of ``compare`` is a mean of this ratio and start-up's, weighted by the
baseline's shares.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baselines import ort_eval

SPENT = [0.0]
_RUN = ort.InferenceSession.run


def _timed_run(self: ort.InferenceSession, *args: Any, **kwargs: Any) -> Any:
    t = time.perf_counter()
    try:
        return _RUN(self, *args, **kwargs)
    finally:
        SPENT[0] += time.perf_counter() - t


def compare(model: str, data: str, bs: str, train_bs: str) -> None:
    """One ``bncheck compare --format json``, its report discarded."""
    from bncheck.cli.app import main

    sys.argv = ["bncheck", "compare", model, "--data", data, "--batch-size", bs,
                "--train-batch-size", train_bs, "--format", "json"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main()


if __name__ == "__main__":
    ort.InferenceSession.run = _timed_run
    # Plain inference exactly as the wall-time baseline runs it.
    what: dict[str, Callable[..., None]] = {"compare": compare, "plain": ort_eval}
    what[sys.argv[1]](*sys.argv[2:])
    print(f"{SPENT[0]:.6f}")
