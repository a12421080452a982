"""Which failures a stage retries: transient ones only.

Retrying a bad config or bad data fails again the same way and burns GPU time, so
Prefect's retries are gated by ``retry_transient``. (Prefect never retries a *crashed*
run, e.g. an OOM-killed worker; re-running the flow resumes from the store instead.)
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from recslm.errors import RecslmError

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)

# What a rank of a multi-rank stage sees when another rank died under it (killed, out of
# memory, its node lost): the collective it was in fails with its transport's message. torch
# raises these as plain RuntimeErrors (or DistError subclasses), so they are told by message.
_LOST_PEER_MARKERS = (
    "gloo/transport/",  # gloo: "Read error ... Connection reset by peer", "Connection closed by peer"
    "Connection closed by peer",
    "NCCL communicator was aborted",
    "Watchdog caught collective operation timeout",
)


def is_lost_peer(exc: BaseException) -> bool:
    """A collective failed because another rank is gone: the attempt, not the stage, failed."""
    import torch.distributed as dist

    if isinstance(exc, (dist.DistNetworkError, dist.DistStoreError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _LOST_PEER_MARKERS)


def is_transient(exc: BaseException | None) -> bool:
    """True for errors that may pass on retry (network, lost workers, unreachable services)."""
    if exc is None:
        return False
    if isinstance(exc, RecslmError):
        return exc.transient
    if isinstance(exc, (ValidationError, ValueError, TypeError, KeyError)):
        return False
    return isinstance(exc, _TRANSIENT_TYPES) or is_lost_peer(exc)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure was transient."""
    return is_transient(state.data if isinstance(state.data, BaseException) else None)
