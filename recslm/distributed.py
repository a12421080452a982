"""The ranks of a multi-rank stage: who this process is, and the process group they share.

A multi-rank stage (``execution.multi_rank_stages``) runs the same stage call in N
processes: N srun tasks of one Slurm job, or N torchrun workers in one pod. Whatever
started them exported torch's ``env://`` variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`process_group` joins them into
one group (NCCL on GPUs, gloo on CPUs), which the Trainer and DeepSpeed then use as they
find it. Every rank trains; only rank 0 writes what outlives the stage (the artifact,
the tracking run): :func:`is_main_process`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Rank:
    """This process's place among the stage's ranks."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_rank() -> Rank:
    """The rank the launcher gave this process (``env://`` variables); rank 0 of 1 without one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Rank(rank=rank, world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", str(rank))))


def current_rank() -> Rank:
    """This process's rank in the initialized process group; rank 0 of 1 outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Rank(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return Rank(rank=0, world_size=1, local_rank=0)


def is_main_process() -> bool:
    """Whether this process writes what outlives the stage (always, outside a multi-rank stage)."""
    return current_rank().main


@contextlib.contextmanager
def process_group(timeout_min: float = 30.0) -> Iterator[Rank]:
    """Join the launcher's ranks into one process group for the block, then leave it.

    A no-op for a single process. The backend is NCCL when this rank has a GPU (each rank
    takes the GPU of its local rank) and gloo otherwise. A block that succeeded on every rank
    calls :func:`barrier` before it ends (a rank that leaves while gloo's threads still
    talk to the others can abort in the C++ runtime); one that failed does not, since the
    others may never reach it: the launcher ends the remaining ranks (srun
    ``--kill-on-bad-exit``, torchrun), and a rank blocked in a collective with a dead peer
    fails with it.
    """
    rank = env_rank()
    if rank.world_size <= 1:
        yield rank
        return
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_min))
    try:
        yield rank
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (after rank 0 fetched a stage's inputs; at the end of a successful
    multi-rank block); a no-op in one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
