"""torchrun: join the process group the launcher describes, and share results over it.

Loaded only when WORLD_SIZE says there are several processes; plain ``bncheck`` never imports
torch.distributed. gloo on CPU, nccl with --device cuda (each rank on GPU LOCAL_RANK).
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from bncheck.core.network.options import Device
from bncheck.errors import BncheckError

# How long a rank waits for the others before giving up (a rank that died, a hung filesystem).
DEFAULT_TIMEOUT_S = 600


class TorchCollective:
    """The processes of one torchrun job."""

    def __init__(self, device: Device) -> None:
        if not dist.is_initialized():
            cuda = device is not Device.CPU and torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            timeout = timedelta(seconds=float(os.environ.get("BNCHECK_DIST_TIMEOUT",
                                                             DEFAULT_TIMEOUT_S)))
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
            atexit.register(dist.destroy_process_group)
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order, on every rank."""
        out: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(out, obj)
        except RuntimeError as e:
            raise _peer_lost(e) from None
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        try:
            dist.barrier()
        except RuntimeError as e:
            raise _peer_lost(e) from None


def _peer_lost(e: RuntimeError) -> BncheckError:
    """A rank that died or hung ends the exchange: not this rank's bug, and no traceback."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    # gloo prefixes the source file it failed in; the reason is what follows it.
    reason = first.split("] ", 1)[-1].split(". ", 1)[0]
    return BncheckError(f"another process of this job stopped answering ({reason}), so this "
                        "one stopped too and nothing was written")
