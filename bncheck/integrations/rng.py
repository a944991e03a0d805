"""Every random number generator a training loop draws from, saved and put back around a check."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Python's, numpy's global and torch's (CPU and every initialised CUDA device) RNG states
    are what they were before the block, whatever it drew.

    bncheck's own passes use private seeded generators; this guards what they cannot see (a
    model whose forward draws random numbers, a data pipeline touched while the held-out set is
    read), because a check that moved any state would make training differ from the run without.
    """
    py = random.getstate()
    npy = np.random.get_state()
    torch = sys.modules.get("torch")
    cpu = torch.get_rng_state() if torch is not None else None
    cuda = torch.cuda.get_rng_state_all() if torch is not None and torch.cuda.is_initialized() \
        else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        if torch is not None and cpu is not None:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
