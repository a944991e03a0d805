"""The model zoo's fast subset: real architectures trained here, every command checked end to end
(tests/support/zoo.py). ``make zoo`` (bench/zoo.py) runs every entry and writes bench/ZOO.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.zoo import BY_NAME, sweep

# One quick row with margins (bench/ZOO.md), about 25 s: torchvision's MobileNetV3-Small, whose
# trained behaviour is dominated by batch noise after the zoo's short training (noise floor
# 0.32), with hard-swish, squeeze-excitation and BatchNorm at momentum 0.01. One, because CI must
# stay under 15 minutes on 2 cores (MobileNetV3-Large, 46 s, took it to 15 min 3 s); make zoo
# runs the rest.
FAST = ("tv_mobilenet_v3_small",)


@pytest.mark.parametrize("name", FAST)
def test_a_zoo_model_passes_every_check(name: str, tmp_path: Path) -> None:
    """inspect counts every norm module; compare's printed fix never worsens the healthy model
    and restores the one whose statistics were never updated; fold, instance-norm and
    batch-stats export to ONNX, verified, and run in onnxruntime."""
    row = sweep(BY_NAME[name], tmp_path)
    assert not row.problems, row.problems
    assert row.layers == row.norms > 0
    assert row.corrupted.startswith("mismatch")
