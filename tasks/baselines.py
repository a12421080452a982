"""The baselines stage as a Prefect task."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.stages import baselines
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="baselines", **TASK_DEFAULTS)
def baselines_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef) -> ArtifactRef:
    """Non-LM reference models on the run's records (light: runs in the flow's process)."""
    return run_stage(baselines.STAGE, config, tracking, {"data": data})
