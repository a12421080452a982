"""The teacher stage as a Prefect task."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.stages import teacher
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="teacher", **TASK_DEFAULTS)
def teacher_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef) -> ArtifactRef:
    """Train the teacher (resuming from checkpoints), or load a trained one."""
    return run_stage(teacher.STAGE, config, tracking, {"data": data}, remote=True)
