"""What compare measured, the verdict's input: per-layer divergence, the candidates against the
reference, the noise floor, the training batch size and the input-shift evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bncheck.core.judgement.diagnosis import LayerDivergence
from bncheck.core.judgement.discrepancy import Discrepancy
from bncheck.core.judgement.metrics import Truth
from bncheck.core.judgement.shift import InputExpectation, ShiftEvidence
from bncheck.core.network.layers import NormLayer
from bncheck.core.stats.batchsize import BatchSizeEstimate


@dataclass(frozen=True)
class LayerReport:
    """One batch-dependent layer: divergence under eval and under reference propagation."""

    layer: NormLayer
    order: int
    spatial: bool
    eval: LayerDivergence
    reference: LayerDivergence


@dataclass(frozen=True)
class Measurements:
    """Everything compare measured; the verdict is derived in ``verdict.py``."""

    n_samples: int
    n_used: int
    batch_size: int
    train_batch: BatchSizeEstimate
    noise_floor: Discrepancy | None
    candidates: Mapping[str, Discrepancy]
    layers: tuple[LayerReport, ...]
    forward_passes: int
    notes: tuple[str, ...]
    reference_batches: int = 0
    precision: Mapping[str, object] | None = None
    truth: Truth | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)  # by run name, with ``truth``
    shift: ShiftEvidence | None = None
    expectation: InputExpectation | None = None
    # A half-precision model: how far one rounding step of its inputs moves the reference.
    half_rounding: float | None = None
    # Samples whose layer statistics each pass gathered ("eval", "reference"): all of them
    # unless the taps converged first (core/judgement/convergence.py).
    tapped: Mapping[str, int] = field(default_factory=dict)
