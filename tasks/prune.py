"""The profile and prune stages as Prefect tasks."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.stages import profile as profile_stage
from recslm.stages import prune as prune_stage
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="profile", **TASK_DEFAULTS)
def profile_task(config: PipelineConfig, tracking: TrackingHandle, model: ArtifactRef, model_name: str) -> ArtifactRef:
    """Attention vs MLP prefill time per layer of the selected student (the paper's Figure 4)."""
    return run_stage(profile_stage.STAGE, config, tracking, {"model": model}, remote=True, model_name=model_name)


@task(name="prune", **TASK_DEFAULTS)
def prune_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, model: ArtifactRef, profile: ArtifactRef, model_name: str) -> ArtifactRef:
    """OSSCAR (or a baseline) on the selected student, one-shot or gradual with re-distillation."""
    return run_stage(prune_stage.STAGE, config, tracking, {"data": data, "model": model, "profile": profile}, remote=True, model_name=model_name)
