"""The deploy stage as a Prefect task: deploy the final model, smoke-test it, benchmark it."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.stages import deploy
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="deploy", **TASK_DEFAULTS)
def deploy_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, model: ArtifactRef, model_name: str, run_id: str) -> ArtifactRef:
    """Deploy ``model`` (named ``model_name`` in the summary) as version ``run_id``."""
    return run_stage(deploy.STAGE, config, tracking, {"data": data, "model": model}, model_name=model_name, run_id=run_id)
