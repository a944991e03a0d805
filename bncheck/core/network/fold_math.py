"""Folding a BatchNorm's per-channel scale and shift into the op before it (numpy, float64)."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from bncheck.errors import BncheckError


class FoldTarget(StrEnum):
    """Op kinds a BN can fold into, by where their output channel sits in the weight."""

    CONV = "conv"  # weight (out, in/groups, *k)
    CONV_TRANSPOSE = "conv-transpose"  # weight (in, out/groups, *k)
    LINEAR = "linear"  # weight (out, in)


def bn_scale_shift(layer: str, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                   var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as ``y = x * scale + shift``; refuses statistics that cannot be folded."""
    if not all(np.isfinite(a).all() for a in (gamma, beta, mean, var)) or (var < 0).any():
        raise BncheckError(f"cannot fold layer {layer}: its statistics are NaN/Inf or negative; "
                           "recalibrate first (--mode recalibrate,fold)")
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def fold_weights(target: FoldTarget, weight: np.ndarray, bias: np.ndarray | None,
                 scale: np.ndarray, shift: np.ndarray, groups: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """New (weight, bias) so that the op alone computes ``BN(op(x))``."""
    w = np.asarray(weight, dtype=np.float64)
    b = np.zeros(scale.size) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    if target is FoldTarget.CONV_TRANSPOSE:
        cin, cpg = w.shape[0], w.shape[1]
        s = scale.reshape(groups, 1, cpg, *(1,) * (w.ndim - 2))
        new_w = (w.reshape(groups, cin // groups, cpg, *w.shape[2:]) * s).reshape(w.shape)
    else:
        new_w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    return new_w, b * scale + shift
