"""The model zoo sweep: every BatchNorm architecture in tests/support/zoo.py, end to end.

Writes ``bench/ZOO.md``: per model, inspect's layer count against its norm modules, compare's
verdict on its own data and the printed fix applied, the same with the running statistics never
updated, fold, instance-norm and batch-stats exported to ONNX and run in onnxruntime, and each
command's seconds (in this process: no interpreter start-up). Run from the repository root:
``python bench/zoo.py`` (``make zoo``; about an hour on 2 cores). ``python bench/zoo.py NAME
...`` reruns those models and replaces their rows in the table, keeping the others.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "bench" / "ZOO.md"
sys.path.insert(0, str(ROOT))
# Keras runs on its torch backend here, as bncheck reads .keras files.
os.environ.setdefault("KERAS_BACKEND", "torch")

from tests.support.zoo import BY_NAME, ENTRIES, STEPS, Row, sweep, table  # noqa: E402


def main(names: list[str]) -> None:
    """Sweep the named entries (all when none), print each row, write the table."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"zoo: no entry {', '.join(unknown)}; entries: {', '.join(BY_NAME)}")
    entries = [BY_NAME[n] for n in names] if names else list(ENTRIES)
    rows: list[Row] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, entry in enumerate(entries, 1):
            t = time.perf_counter()
            try:
                row = sweep(entry, Path(tmp) / entry.name)
            except Exception as e:  # a bncheck bug: the table says so, the sweep goes on
                traceback.print_exc()
                row = Row(entry, problems=[f"crashed: {type(e).__name__}: {e}".splitlines()[0]])
            rows.append(row)
            print(f"[{i}/{len(entries)}] {entry.name}: "
                  f"{'pass' if not row.problems else '; '.join(row.problems)} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
    if names:
        _replace_rows(table(rows))
        return
    text = table(rows)
    passed = sum(not r.problems for r in rows)
    ZOO.write_text(
        "# The model zoo sweep\n\n"
        "Written by `bench/zoo.py` (`make zoo`). Every model has random weights, then "
        f"{STEPS} Adam steps at batch size 32 on a proxy task (which of sklearn's two photos, "
        "and which quadrant, a crop comes from: 8 classes), the learning rate decayed to zero. "
        "The torch models' running statistics are then re-estimated over the training set "
        "(a cumulative average, as the last epochs of a long run leave them); the Keras ones "
        "train with momentum 0.9 and are left as training leaves them. Every command runs on "
        "128 other crops, through the CLI in one process (the seconds leave out the "
        "interpreter's start-up). *Gap*: relative L2 of the output from the trained behaviour "
        "(batch statistics at the training batch size); a printed fix must not raise it by "
        "more than 0.02, and the printed fix of the model whose statistics were never updated "
        "(mean 0, variance 1) must bring it within 0.02 of the healthy model's, or, where "
        "compare finds the trained behaviour dominated by batch noise (a tolerance above "
        "0.6, so the gap measures that noise more than the fix), its accuracy within 0.02 of "
        "the healthy model's. Fold must "
        "leave no BatchNormalization and match eval mode to 1e-5 relative in onnxruntime; "
        "instance-norm must give a sample the same output alone as in a batch; every ONNX "
        "file is run in onnxruntime. `python bench/zoo.py NAME` reruns a row.\n\n"
        f"**{passed} of {len(rows)} pass** ({(time.perf_counter() - start) / 60:.0f} minutes)."
        "\n\n" + text + "\n")
    print(f"{passed} of {len(rows)} pass; bench/ZOO.md written")


def _replace_rows(fresh: str) -> None:
    """Put the rows of ``fresh`` (a table) in place of the same models' rows in ZOO.md."""
    new = {line.split("|")[1].strip(): line for line in fresh.splitlines()[2:]}
    lines = ZOO.read_text().splitlines()
    lines = [new.get(line.split("|")[1].strip(), line) if line.startswith("| ") else line
             for line in lines]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    passed = sum(line.rstrip().endswith("| pass |") or "| pass (" in line for line in rows)
    lines = [re.sub(r"\*\*\d+ of \d+ pass\*\*", f"**{passed} of {len(rows)} pass**", line)
             for line in lines]
    ZOO.write_text("\n".join(lines) + "\n")
    print(f"{', '.join(new)} replaced; {passed} of {len(rows)} pass")


if __name__ == "__main__":
    main(sys.argv[1:])
