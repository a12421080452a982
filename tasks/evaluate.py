"""The evaluate stage as a Prefect task."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.progress import progress_bar
from recslm.store import ArtifactRef
from tasks.dispatch import dispatchable
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="evaluate", **TASK_DEFAULTS)
@dispatchable
def evaluate_task(config: PipelineConfig, tracking: TrackingHandle, model: ArtifactRef, data: ArtifactRef, model_name: str) -> ArtifactRef:
    """AUC per task and mean on the configured split, with prefix-shared scoring."""

    def body(out, work, run):
        from recslm.data.build import load_split, tokenizer_path  # heavy: only when the stage runs
        from recslm.evaluate.evaluate import evaluate_records

        with progress_bar(f"scoring {model_name} ({config.evaluate.split})") as on_progress:
            return evaluate_records(
                model.path / "model",
                load_split(data.path, config.evaluate.split),
                prefix_sharing=config.evaluate.prefix_sharing,
                groups_per_batch=config.evaluate.groups_per_batch,
                data_tokenizer_dir=tokenizer_path(data.path),
                scores_out=out / "scores.parquet",
                on_progress=on_progress,
            )

    return run_stage(
        "evaluate", config, tracking, config.evaluate.model_dump(mode="json", exclude={"groups_per_batch"}), {"model": model, "data": data}, body,
        name=f"evaluate-{model_name}", runtime=config.runtime,
    )
