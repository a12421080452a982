"""The run summary (``<run dir>/summary.json``): the machine-readable result of ``recslm run``.

Field names follow DESIGN.md; fields may be added, never renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from recslm.evaluate.metrics import delta_pct
from recslm.jsonfile import write_json

Role = Literal["baseline", "teacher", "student", "sft_baseline", "pruned", "quantized"]


class StageRecord(BaseModel):
    key: str
    uri: str
    cached: bool
    wall_s: float
    metrics: dict[str, Any] = Field(default_factory=dict)
    worker: dict[str, str] | None = None  # where it ran in this run (backend, Slurm job id or pod); None when cached


class ModelRecord(BaseModel):
    """One model's line: ``auc``/``auc_mean`` are on the reported split (test), ``val_*`` on val
    (what selection, the teacher gate and promotion decide on). A generative model (``task``)
    has no AUC: its line holds the response loss, the sentiment task metric and the divergence
    to the teacher instead, on the same two splits."""

    name: str
    role: Role
    params: int
    bytes: int
    auc: dict[str, float] = Field(default_factory=dict)
    auc_mean: float | None = None
    auc_delta_pct: float | None = None  # vs the teacher
    key: str
    parent: str | None = None  # the model this one was pruned or quantized from
    auc_delta_vs_parent_pct: float | None = None
    params_non_embedding: int | None = None  # without input embeddings and output head (None: not an LM)
    val_auc: dict[str, float] = Field(default_factory=dict)
    val_auc_mean: float | None = None
    val_auc_delta_pct: float | None = None  # vs the teacher, on val
    task: Literal["ranking", "generative"] = "ranking"
    loss: float | None = None  # generative: response-token cross-entropy on the reported split
    val_loss: float | None = None  # generative: on val (what selection reads)
    val_loss_increase_pct: float | None = None  # generative: val loss vs the teacher's, in percent (positive: worse)
    sentiment: float | None = None  # generative: the task metric on the reported split (recslm.evaluate.sentiment)
    val_sentiment: float | None = None
    divergence: float | None = None  # generative: forward KL from the teacher per response token, reported split
    val_divergence: float | None = None
    val_loss_increase_vs_parent_pct: float | None = None


class RunSummary(BaseModel):
    run_id: str
    config_hash: str
    wall_s: float
    stages: dict[str, StageRecord]
    models: list[ModelRecord]
    winner: str | None = None
    recslm_version: str = ""
    mlflow_run_id: str | None = None
    run_dir: str = ""
    registry: dict[str, Any] | None = None  # the register stage: versions, release candidate, champion verdict
    teacher_gate: dict[str, Any] | None = None  # does the teacher beat the baselines and SFT students on val


class TeacherAUC(BaseModel):
    """The teacher's mean AUC on the reported split and on val: what every delta is against
    (generative task: its val loss instead)."""

    auc_mean: float | None = None
    val_auc_mean: float | None = None
    val_loss: float | None = None

    @classmethod
    def of(cls, eval_metrics: dict[str, Any]) -> TeacherAUC:
        if eval_metrics.get("task") == "generative":
            return cls(val_loss=float(eval_metrics["val_loss"]))
        return cls(auc_mean=float(eval_metrics["auc_mean"]), val_auc_mean=float(eval_metrics["val_auc_mean"]))


def increase_pct(value: float, reference: float) -> float:
    """How much higher ``value`` is than ``reference``, in percent (a loss: positive is worse)."""
    return (value - reference) / reference * 100.0


def generative_record(name: str, role: Role, eval_metrics: dict[str, Any], key: str, teacher: TeacherAUC) -> ModelRecord:
    """A generative model's line from its evaluate-stage metrics."""

    def maybe(field: str) -> float | None:
        value = eval_metrics.get(field)
        return None if value is None else float(value)

    non_embedding = eval_metrics.get("params_non_embedding")
    return ModelRecord(
        name=name, role=role, task="generative", params=int(eval_metrics["params"]), bytes=int(eval_metrics["bytes"]), key=key,
        params_non_embedding=int(non_embedding) if non_embedding is not None else None,
        loss=float(eval_metrics["loss"]), val_loss=float(eval_metrics["val_loss"]),
        val_loss_increase_pct=increase_pct(float(eval_metrics["val_loss"]), teacher.val_loss) if teacher.val_loss else None,
        sentiment=maybe("sentiment"), val_sentiment=maybe("val_sentiment"), divergence=maybe("divergence"), val_divergence=maybe("val_divergence"),
    )  # fmt: skip


def model_record(name: str, role: Role, eval_metrics: dict[str, Any], key: str, teacher: TeacherAUC, bytes_: int | None = None) -> ModelRecord:
    """A model's line in the summary from its evaluate-stage metrics (or a baseline's)."""
    if eval_metrics.get("task") == "generative":
        return generative_record(name, role, eval_metrics, key, teacher)
    non_embedding = eval_metrics.get("params_non_embedding")
    return ModelRecord(
        name=name,
        role=role,
        params=int(eval_metrics["params"]),
        bytes=int(eval_metrics["bytes"]) if bytes_ is None else bytes_,
        auc={k: float(v) for k, v in eval_metrics["auc"].items()},
        auc_mean=float(eval_metrics["auc_mean"]),
        auc_delta_pct=delta_pct(float(eval_metrics["auc_mean"]), teacher.auc_mean),
        key=key,
        params_non_embedding=int(non_embedding) if non_embedding is not None else None,
        val_auc={k: float(v) for k, v in eval_metrics["val_auc"].items()},
        val_auc_mean=float(eval_metrics["val_auc_mean"]),
        val_auc_delta_pct=delta_pct(float(eval_metrics["val_auc_mean"]), teacher.val_auc_mean),
    )


def derived_record(name: str, role: Role, eval_metrics: dict[str, Any], key: str, teacher: TeacherAUC, parent: ModelRecord) -> ModelRecord:
    """The line of a model pruned or quantized from ``parent``: also its delta against the parent."""
    record = model_record(name, role, eval_metrics, key, teacher)
    if record.task == "generative":
        return record.model_copy(update={"parent": parent.name, "val_loss_increase_vs_parent_pct": increase_pct(record.val_loss, parent.val_loss)})
    return record.model_copy(update={"parent": parent.name, "auc_delta_vs_parent_pct": delta_pct(record.auc_mean, parent.auc_mean)})


def write_summary(summary: RunSummary, run_dir: Path) -> Path:
    """Write summary.json atomically (readers never see half a file)."""
    return write_json(run_dir / "summary.json", summary.model_dump(mode="json"))
