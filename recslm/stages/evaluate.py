"""The evaluate stage: AUC per task and mean on ``evaluate.split``, answer loss, size and scoring
speed of one model, scored prefix-shared (each member's prefix once, its KV cache for all k)."""

from __future__ import annotations

from typing import Any

from recslm.progress import progress_bar
from recslm.stages.base import Stage, StageContext
from recslm.store import ArtifactRef


def key(config: Any, model_name: str) -> Any:
    """The model and data are inputs; the name is a label. Batch size changes speed, not scores."""
    return config.evaluate.model_dump(mode="json", exclude={"groups_per_batch"})


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], model_name: str) -> dict[str, Any]:
    from recslm.data.build import load_split, tokenizer_path  # torch: only when the stage runs
    from recslm.evaluate.evaluate import evaluate_records

    data = inputs["data"].path
    with progress_bar(f"scoring {model_name} ({config.evaluate.split})") as on_progress:
        return evaluate_records(
            inputs["model"].path / "model", load_split(data, config.evaluate.split),
            prefix_sharing=config.evaluate.prefix_sharing, groups_per_batch=config.evaluate.groups_per_batch,
            data_tokenizer_dir=tokenizer_path(data), scores_out=ctx.out / "scores.parquet", on_progress=on_progress,
        )  # fmt: skip


STAGE = Stage("evaluate", key, body, label=lambda model_name: f"evaluate-{model_name}")
