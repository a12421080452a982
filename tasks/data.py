"""The data stage as a Prefect task."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.stages import data
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="data", **TASK_DEFAULTS)
def data_task(config: PipelineConfig, tracking: TrackingHandle) -> ArtifactRef:
    """Ranking records per split and the tokenizer."""
    return run_stage(data.STAGE, config, tracking, {})
