"""The evaluate stage: AUC per task and mean on ``evaluate.split`` (reported) and on val (what
decisions read), answer loss, size and scoring speed of one model, scored prefix-shared (each
member's prefix once, its KV cache for all k)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recslm.progress import progress_bar
from recslm.stages.base import Stage, StageContext, without_later_defaults
from recslm.store import ArtifactRef


def key(config: Any, model_name: str) -> Any:
    """The model and data are inputs (and the baselines, for the teacher: its differences to
    them with intervals); the name is a label. Batch size changes speed, not scores."""
    section = without_later_defaults(config.evaluate, ("generate_records", "max_new_tokens"))
    section.pop("groups_per_batch")
    return section


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], model_name: str) -> dict[str, Any]:
    if config.task == "generative":
        return generative_body(config, ctx, inputs, model_name)
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
    metrics = with_validation(results[config.evaluate.split], results["val"], config.evaluate.split)
    if inputs.get("baselines") is not None:
        metrics["vs_baselines"] = versus_baselines(ctx.out, inputs["baselines"].path, config.evaluate.split)
    return metrics


def versus_baselines(scores_dir: Path, baselines_dir: Path, reported: str, draws: int = 1000) -> dict[str, dict[str, Any]]:
    """This model's mean AUC minus each baseline's, on val and on the reported split, with a
    member-bootstrap interval (same records, paired): how sure "the LM beats it" is."""
    import pandas as pd

    from recslm.errors import DataError
    from recslm.evaluate.bootstrap import paired_auc_difference
    from recslm.evaluate.compare import on_same_records

    out: dict[str, dict[str, Any]] = {}
    for split in dict.fromkeys(("val", reported)):
        mine = pd.read_parquet(scores_dir / scores_file(split, reported))
        theirs = pd.read_parquet(baselines_dir / f"scores-{split}.parquet")
        if not on_same_records(mine, theirs):
            raise DataError(f"{split}: the baselines' scores are not on this model's records (another data artifact?)")
        for name in theirs.columns.drop(["task", "label"]):
            diff = paired_auc_difference(mine["task"], mine["label"], mine["member_id"], mine["score"], theirs[name], draws=draws)
            out.setdefault(name, {})[split] = diff.as_dict()
    return out


def scores_file(split: str, reported: str) -> str:
    """``scores.parquet`` holds the reported split's scores (as always); val's are beside it."""
    return "scores.parquet" if split == reported else f"scores-{split}.parquet"


def with_validation(reported: dict[str, Any], val: dict[str, Any], split: str) -> dict[str, Any]:
    """The reported split's metrics with val's AUC and loss beside them (``val_*``)."""
    return {**reported, "split": split, "val_auc": val["auc"], "val_auc_mean": val["auc_mean"], "val_loss": val["loss"], "val_examples": val["examples"]}


GENERATIVE_METRICS = ("loss", "examples", "sentiment", "sentiment_reference", "divergence", "generated", "generated_tokens_mean")


def generative_body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], model_name: str) -> dict[str, Any]:
    """The generative task: response loss, the sentiment task metric and (given the teacher, as
    for every student) the divergence to it, on val and on the reported split; what each split's
    first records were answered with goes to ``samples.json``."""
    from recslm.data.build import tokenizer_path  # torch, scikit-learn: only when the stage runs
    from recslm.data.generation_artifact import load_generation_split
    from recslm.evaluate.generative import evaluate_generation
    from recslm.jsonfile import write_json

    data = inputs["data"].path
    reported = config.evaluate.split
    teacher = inputs.get("teacher")
    with progress_bar(f"evaluating {model_name}"):
        results = evaluate_generation(
            inputs["model"].path / "model", {split: load_generation_split(data, split) for split in dict.fromkeys(("val", reported))},
            load_generation_split(data, "train"), data_tokenizer_dir=tokenizer_path(data),
            teacher_dir=teacher.path / "model" if teacher is not None else None,
            generate_records=config.evaluate.generate_records, max_new_tokens=config.evaluate.max_new_tokens,
        )  # fmt: skip
    write_json(ctx.out / "samples.json", {split: results[split].pop("samples") for split in dict.fromkeys(("val", reported))})
    metrics: dict[str, Any] = {"task": "generative", "task_metric": "sentiment", "split": reported, **results["model"]}
    for name in GENERATIVE_METRICS:
        if name in results[reported]:
            metrics[name] = results[reported][name]
            metrics[f"val_{name}"] = results["val"][name]
    return metrics


STAGE = Stage("evaluate", key, body, label=lambda model_name: f"evaluate-{model_name}")
