"""The seed's case in full: generators trained at batch sizes 1, 2, 4 and 8, asked with no options.

Writes ``bench/SEED_SUITE.md``: per model, the true and estimated training batch size with its
plausible range, the verdict, the fix, and the L1 error of eval mode, of the printed fix run
verbatim and of the model as trained; then how often the plausible range holds the true batch
size (the estimator's calibration) and how many batch-1 models met the bar (mismatch,
instance-norm, B estimated 1, fixed within 5% of the trained behaviour). Run from the repository
root: ``python bench/seed_suite.py`` (part of ``make bench``; about 15 minutes on 2 cores).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.seed_suite import Case, Row, run_case, table  # noqa: E402

STEPS = 1000
MOMENTA: tuple[float | None, ...] = (0.9, 0.1, 0.01, None)
SPREADS = (0.0, 0.5, 1.0)


def cases() -> list[Case]:
    """Every torch generator at batch size 1 under each momentum, the exposure spreads taking
    turns; the Keras ones under Keras' momenta; and batch sizes 2, 4 and 8 for calibration."""
    out = []
    for i, momentum in enumerate(MOMENTA):
        for j, arch in enumerate(("resnet", "unet", "dcgan")):
            out.append(Case("torch", arch, 1, momentum, SPREADS[(i + j) % 3], STEPS))
            if momentum is not None:
                out.append(Case("keras", arch, 1, momentum, SPREADS[(i + j + 1) % 3], STEPS))
    for batch in (2, 4, 8):
        for k, arch in enumerate(("resnet", "unet", "dcgan")):
            out.append(Case("torch", arch, batch, MOMENTA[k % 2], SPREADS[(batch + k) % 3],
                            STEPS))
    return out


def passes(row: Row) -> bool:
    """The bar for a batch-1 model."""
    return (row.verdict == "mismatch" and row.mode == "instance-norm" and row.estimate == 1
            and row.fix_ratio is not None and row.fix_ratio <= 1.05)


def main() -> None:
    """Run every case and write the table."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases():
            row = run_case(case, Path(tmp) / case.name)
            print(table([row]).splitlines()[-1], flush=True)
            rows.append(row)
    ones = [r for r in rows if r.case.batch == 1]
    covered = sum(r.covered for r in rows)
    text = ("# The seed's case: generators trained at small batch sizes\n\n"
            "Written by `bench/seed_suite.py` (`make bench`). Each generator is trained here "
            f"for {STEPS} steps, asked with `bncheck compare MODEL --data x.npy` and no other "
            "option, and the fix it prints is run verbatim; L1 errors are against the targets "
            "of 128 held-out pairs, measured independently of bncheck. *As trained* is batch "
            "statistics at the training batch size.\n\n"
            f"- Batch-1 models meeting the bar (mismatch, instance-norm, B estimated 1, fixed "
            f"within 5% of the trained L1): **{sum(passes(r) for r in ones)} of {len(ones)}**.\n"
            f"- Calibration: the true batch size lies in the plausible range in **{covered} of "
            f"{len(rows)}** models.\n\n" + table(rows))
    (ROOT / "bench" / "SEED_SUITE.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
