"""The seed's own case on the generators its users train (issue: noisy running statistics).

A fast subset of the cases of ``bench/seed_suite.py``, at its training length: generators
trained here at batch size 1 with torch momentum 0.9, 0.01 and None and Keras momentum 0.1 (the
pix2pix-tensorflow setting), on data whose per-sample exposure spread runs from none to wide,
each asked with no options. Each must be a mismatch, fixed by instance-norm, at an estimated
training batch size of 1, and the rewrite command compare prints, run verbatim, must come within
5% of the trained behaviour's L1 error. A model trained at batch size 4 must have 4 in its
plausible range and never be offered instance-norm.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.seed_suite import Case, run_case

STEPS = 1000

BATCH_ONE = [
    Case("torch", "resnet", 1, 0.9, 0.0, STEPS),
    Case("torch", "unet", 1, 0.01, 0.0, STEPS),
    Case("torch", "dcgan", 1, None, 1.0, STEPS),
    Case("keras", "unet", 1, 0.9, 1.0, STEPS),
]


@pytest.mark.parametrize("case", BATCH_ONE, ids=lambda c: c.name)
def test_a_batch_one_generator_is_flagged_and_its_printed_fix_restores_it(
        case: Case, tmp_path: Path) -> None:
    if case.framework == "keras":
        pytest.importorskip("keras")
    row = run_case(case, tmp_path)
    assert row.verdict == "mismatch" and row.mode == "instance-norm", row
    assert row.estimate == 1 and row.source == "estimated", row
    # Eval mode is far worse than the trained behaviour, and the fix brings it back.
    assert row.l1_eval > 1.3 * row.l1_train, row
    assert row.fix_ratio is not None and row.fix_ratio <= 1.05, row


def test_a_batch_four_generator_is_read_as_four_and_not_given_instance_norm(
        tmp_path: Path) -> None:
    row = run_case(Case("torch", "unet", 4, 0.1, 1.0, STEPS), tmp_path)
    assert row.covered, row
    assert row.mode != "instance-norm", row
    if row.l1_fix is not None:
        assert row.l1_fix <= row.l1_eval, row
