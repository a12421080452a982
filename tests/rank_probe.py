"""Rank programs for tests/stages/test_ranks.py, run by torchrun through ``tasks.torchrun``."""

from __future__ import annotations

import os
import signal
from typing import Any

import torch
import torch.distributed as dist

from recslm.distributed import barrier, process_group


def allreduce(payload: dict[str, Any]) -> dict[str, Any]:
    """Every rank adds ``payload["value"] * (rank + 1)``; rank 0 reports the sum and the group."""
    with process_group() as rank:
        total = torch.tensor([payload["value"] * (rank.rank + 1)], dtype=torch.float64)
        dist.all_reduce(total)
        backend = dist.get_backend()
        barrier()
    return {"sum": float(total.item()), "world_size": rank.world_size, "backend": backend, "rank": rank.rank}


def lose_rank(payload: dict[str, Any]) -> dict[str, Any]:
    """Rank 1 dies (SIGKILL, as the OOM killer would) while rank 0 waits for it in a collective."""
    with process_group() as rank:
        if rank.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        dist.barrier()
        barrier()
    return {"rank": rank.rank}
