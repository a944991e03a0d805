"""How far from the reference still counts as behaving as trained."""

from __future__ import annotations

# Relative L2 below which two runs count as the same function whatever the noise floor: float
# rounding and harmless re-batching noise stay well under it.
ABS_TOLERANCE = 0.05
# The noise floor compares two noisy re-batchings; a healthy eval run (one noisy side) lands near
# floor / sqrt(2), so twice the floor leaves room without hiding a real departure.
FLOOR_FACTOR = 2.0
# A tolerance above this would pass outputs that share little with the trained behaviour (an
# all-zero output is 1.0 away); a reference that noisy cannot judge eval mode.
MAX_TOLERANCE = 0.6


def tolerance_for(noise_floor: float) -> float:
    """The tolerance for a given noise floor."""
    return max(FLOOR_FACTOR * noise_floor, ABS_TOLERANCE)
