"""The evaluate stage: AUC per task and mean on ``evaluate.split`` (reported) and on val (what
decisions read), answer loss, size and scoring speed of one model, scored prefix-shared (each
member's prefix once, its KV cache for all k)."""

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
    results: dict[str, dict[str, Any]] = {}
    for split in dict.fromkeys(("val", config.evaluate.split)):
        with progress_bar(f"scoring {model_name} ({split})") as on_progress:
            results[split] = evaluate_records(
                inputs["model"].path / "model", load_split(data, split),
                prefix_sharing=config.evaluate.prefix_sharing, groups_per_batch=config.evaluate.groups_per_batch,
                data_tokenizer_dir=tokenizer_path(data), scores_out=ctx.out / scores_file(split, config.evaluate.split), on_progress=on_progress,
            )  # fmt: skip
    return with_validation(results[config.evaluate.split], results["val"], config.evaluate.split)


def scores_file(split: str, reported: str) -> str:
    """``scores.parquet`` holds the reported split's scores (as always); val's are beside it."""
    return "scores.parquet" if split == reported else f"scores-{split}.parquet"


def with_validation(reported: dict[str, Any], val: dict[str, Any], split: str) -> dict[str, Any]:
    """The reported split's metrics with val's AUC and loss beside them (``val_*``)."""
    return {**reported, "split": split, "val_auc": val["auc"], "val_auc_mean": val["auc_mean"], "val_loss": val["loss"], "val_examples": val["examples"]}


STAGE = Stage("evaluate", key, body, label=lambda model_name: f"evaluate-{model_name}")
