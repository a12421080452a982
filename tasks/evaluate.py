"""The evaluate stage as a Prefect task."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.stages import evaluate
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="evaluate", **TASK_DEFAULTS)
def evaluate_task(
    config: PipelineConfig, tracking: TrackingHandle, model: ArtifactRef, data: ArtifactRef, model_name: str, baselines: ArtifactRef | None = None,
    teacher: ArtifactRef | None = None,
) -> ArtifactRef:
    """AUC per task and mean on the configured split, with prefix-shared scoring (and, given the
    baselines, the differences to them with member-bootstrap intervals); for the generative
    task, response loss and the sentiment metric (and, given the teacher, the divergence to it)."""
    return run_stage(evaluate.STAGE, config, tracking, {"model": model, "data": data, "baselines": baselines, "teacher": teacher}, remote=True, model_name=model_name)
