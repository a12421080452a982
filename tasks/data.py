"""The data stage as a Prefect task."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="data", **TASK_DEFAULTS)
def data_task(config: PipelineConfig, tracking: TrackingHandle) -> ArtifactRef:
    """Ranking records per split and the tokenizer."""

    def body(out, work, run):
        from recslm.data.build import build_data_artifact  # heavy (tokenizers, pandas): only when the stage runs

        return build_data_artifact(config.data, out)

    return run_stage("data", config, tracking, config.data, {}, body)
