"""Backend-neutral description of a normalization layer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Family(StrEnum):
    """What a layer normalizes over; only BATCH (and INSTANCE with running stats) depend on the batch."""

    BATCH = "batch"
    INSTANCE = "instance"
    GROUP = "group"
    LAYER = "layer"
    RMS = "rms"


class MomentumNote(StrEnum):
    """How a layer's running average is updated, as far as the file says."""

    TORCH = "torch"  # exponential, torch's momentum convention
    CUMULATIVE = "cumulative"  # torch momentum=None: a cumulative average
    FROZEN = "frozen"  # FrozenBatchNorm2d and kin: never updated
    ONNX = "onnx"  # exponential, from an ONNX graph (converted to torch's convention)
    KERAS = "keras"  # exponential, from a Keras layer (converted to torch's convention)
    UNKNOWN = "unknown"  # a bare state_dict does not say
    NONE = "none"  # no running statistics at all


# What a pass says of a BatchNorm whose input has one value per channel per sample ((N, C), or 1x1
# maps): it has no per-sample statistics, so it stays on running stats.
KEPT_2D = "input has one value per channel per sample (N, C or 1x1 maps); kept on running stats"


@dataclass(frozen=True)
class NormLayer:
    """One normalization layer as found in a model, with its statistics as float64 arrays.

    ``momentum`` always uses torch's convention (weight of the new batch); ``None`` with
    ``MomentumNote.CUMULATIVE`` means a cumulative average, and ``None`` with
    ``MomentumNote.UNKNOWN`` means the file does not say (a bare state_dict).
    """

    name: str
    kind: str
    family: Family
    channels: int | None
    eps: float | None
    momentum: float | None
    momentum_note: MomentumNote
    affine: bool
    tracks_running_stats: bool
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    num_batches_tracked: int | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    # An ONNX BatchNormalization with training_mode=1: batch statistics even at inference.
    training_mode: bool = False
    # torch averages unbiased batch variances into running_var, Keras biased ones.
    unbiased_var: bool = True
    # Framework options beyond torch's (Keras: axis, renorm, synchronized), for the report.
    options: tuple[tuple[str, object], ...] = ()

    @property
    def needs_stats(self) -> bool:
        """Whether eval mode normalizes this layer differently from training."""
        return self.uses_running_stats and self.momentum_note is not MomentumNote.FROZEN

    @property
    def uses_running_stats(self) -> bool:
        """True when inference normalizes with stored statistics, i.e. eval can differ from training."""
        return (
            self.family in (Family.BATCH, Family.INSTANCE)
            and self.tracks_running_stats
            and self.running_mean is not None
            and self.running_var is not None
        )

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary (ranges, not full arrays)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "family": self.family.value,
            "channels": self.channels,
            "eps": self.eps,
            "momentum": self.momentum,
            "momentum_note": (f"{self.momentum_note.value} {1.0 - self.momentum:g}"
                              if self.momentum_note in (MomentumNote.ONNX, MomentumNote.KERAS)
                              and self.momentum is not None else self.momentum_note.value),
            "affine": self.affine,
            "track_running_stats": self.tracks_running_stats,
            "training_mode": self.training_mode,
            "num_batches_tracked": self.num_batches_tracked,
            "running_mean": finite_range(self.running_mean),
            "running_var": finite_range(self.running_var),
            **({"options": dict(self.options)} if self.options else {}),
        }


def has_per_sample_stats(shape: tuple[int, ...]) -> bool:
    """Whether a per-sample input of ``shape`` (C, *spatial) has more than one value per
    channel, so that per-sample statistics exist ((N, C) inputs and 1x1 maps have none)."""
    return math.prod(shape[1:]) > 1


def finite_range(a: np.ndarray | None) -> list[float] | None:
    """[min, max] over the finite values of ``a``; None when there are none."""
    if a is None:
        return None
    finite = a[np.isfinite(a)]
    return [float(finite.min()), float(finite.max())] if finite.size else None


def momentum_from_onnx(onnx_momentum: float) -> float:
    """ONNX keeps ``running = m * running + (1 - m) * batch``; torch's momentum is ``1 - m``."""
    return 1.0 - onnx_momentum
