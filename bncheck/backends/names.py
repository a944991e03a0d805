"""How frameworks name a BatchNorm's running statistics, wherever they appear as tensors."""

from __future__ import annotations

import re

# "bn1.running_mean" (torch), "enc2_bn/moving_mean:0" (Keras, TensorFlow), "bn_moving_mean".
MEAN = re.compile(r"^(?P<layer>.+?)[/_.](moving_mean|running_mean)(:\d+)?$")
_STAT = re.compile(r"(^|[/_.])(moving_mean|moving_variance|running_mean|running_var)(:\d+)?$")


def is_statistic(name: str) -> bool:
    """A tensor or variable named like a BatchNorm running statistic."""
    return _STAT.search(name) is not None
