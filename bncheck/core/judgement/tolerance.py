"""How far from the reference still counts as behaving as trained."""

from __future__ import annotations

import math

# Relative L2 below which two runs count as the same function whatever the noise floor: float
# rounding and harmless re-batching noise stay well under it.
ABS_TOLERANCE = 0.05
# The noise floor compares two noisy re-batchings; a healthy eval run (one noisy side) lands near
# floor / sqrt(2), so twice the floor leaves room without hiding a real departure.
FLOOR_FACTOR = 2.0
# A tolerance above this would pass outputs that share little with the trained behaviour (an
# all-zero output is 1.0 away); a reference that noisy cannot judge eval mode.
MAX_TOLERANCE = 0.6
# Above the cap no output can be passed, but one can still be shown to depart: eval mode farther
# from the trained behaviour than an all-zero output is (relative L2 above 1.0), and farther than
# the tolerance, shares nothing with it that re-batching leaves.
DEPARTURE = 1.0


def departs_beyond_noise(gap: float, tol: float) -> bool:
    """Above the cap: is eval mode's ``gap`` a departure the noise cannot explain?"""
    return math.isfinite(tol) and gap > max(tol, DEPARTURE)


def tolerance_for(noise_floor: float) -> float:
    """The tolerance for a given noise floor."""
    return max(FLOOR_FACTOR * noise_floor, ABS_TOLERANCE)
