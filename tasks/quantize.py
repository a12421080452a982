"""The quantize stage as a Prefect task: one task per scheme, so each variant is cached on its own."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.stages import quantize
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="quantize", **TASK_DEFAULTS)
def quantize_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, model: ArtifactRef, model_name: str, scheme: str) -> ArtifactRef:
    """Quantize the final student with one scheme into a compressed-tensors folder."""
    return run_stage(quantize.STAGE, config, tracking, {"data": data, "model": model}, remote=True, model_name=model_name, scheme=scheme)
