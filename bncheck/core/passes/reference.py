"""How the reference runs: at which batch size, on which samples, in which order.

compare and rewrite's recalibrate share this plan, so that "population statistics" mean the same
thing in both: moments of each layer's input under reference propagation at the training batch
size, over the same shuffled samples (docs/design.md, "The reference").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bncheck.core.network.layers import NormLayer
from bncheck.core.network.model import LayerShapes
from bncheck.core.stats.batchsize import BatchSizeEstimate, BatchSizeSource, estimate_batch_size
from bncheck.core.stats.taps import TapCollector

# Samples are shuffled with this seed before reference batches are formed: a class-sorted image
# folder would otherwise give single-class batches that no training loop ever saw.
SHUFFLE_SEED = 0
# Fewer reference batches than this at the training batch size cannot show how the reference
# varies with batch composition.
MIN_REFERENCE_BATCHES = 4


@dataclass(frozen=True)
class ReferencePlan:
    """The training batch size, the batch size the reference runs at, and its samples in order."""

    train: BatchSizeEstimate
    batch: int
    used: np.ndarray
    notes: list[str]

    @property
    def batches(self) -> int:
        """How many reference batches there are."""
        return self.used.size // self.batch


def training_batch(eval_taps: TapCollector, layers: Mapping[str, NormLayer], n: int,
                   shapes: LayerShapes) -> BatchSizeEstimate:
    """The training batch size estimated from an eval pass over ``n`` samples that tapped the
    layers of ``layers`` nearest the input (LAYERS_TRIED of them, or more); ``given_batch`` when
    the user gave it.

    ``shapes`` are the per-sample input shapes of every layer in ``layers``.
    """
    order = eval_taps.order
    # A layer with one value per channel per sample ((N, C), or 1x1 maps) cannot train at
    # batch size 1: torch refuses, as there is no variance to normalize with.
    per_sample = all(math.prod(s[1:]) > 1 for s in shapes.values())
    return estimate_batch_size([(layers[k], eval_taps.acc[k]) for k in order], n,
                               min_batch=1 if per_sample else 2)


def given_batch(train_batch_size: int) -> BatchSizeEstimate:
    """The training batch size the user gave."""
    return BatchSizeEstimate(train_batch_size, BatchSizeSource.OPTION, "from --train-batch-size")


def plan_reference(train: BatchSizeEstimate, n: int, max_batch: int | None = None
                   ) -> ReferencePlan:
    """The plan for ``n`` samples at the training batch size ``train``.

    ``max_batch`` is the largest batch the model runs (a graph with a fixed batch size).
    """
    notes: list[str] = []
    b = train.value
    if max_batch is not None and b > max_batch:
        notes.append(f"the model runs only at batch size {max_batch}, so the reference does "
                     f"too, not at the training batch size {b}"
                     + (": at 1 it is the per-sample (instance-norm) view, and the noise floor "
                        "and batch-stats figures say nothing about training at larger batches"
                        if max_batch == 1 else ""))
        b = max_batch
    if b > max(1, n // 2):
        capped = max(1, n // 2)
        notes.append(f"training batch size {b} is over half the {n} samples; the reference uses "
                     f"{capped} so it can be re-batched")
        b = capped
    n_used = n - n % b
    if n_used < n:
        notes.append(f"{n - n_used} sample(s) left out so every reference batch has {b}")
    used = np.random.default_rng(SHUFFLE_SEED).permutation(n)[:n_used]
    return ReferencePlan(train, b, used, notes)
