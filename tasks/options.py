"""Task options shared by every stage: retries gated on transient errors, no Prefect caching.

recslm caches by content key in its own store (which works across flows, machines and
Prefect servers), so Prefect's input-hash cache is turned off to avoid two caches that
could disagree.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from recslm.config import PipelineConfig
from tasks.retry import retry_transient

TASK_DEFAULTS: dict[str, Any] = dict(cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=retry_transient)


def with_retries(task: Any, config: PipelineConfig) -> Any:
    """The task with the retry policy from ``execution``."""
    return task.with_options(retries=config.execution.retries, retry_delay_seconds=config.execution.retry_delay_s)
