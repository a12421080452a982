"""The run summary (``<run dir>/summary.json``): the machine-readable result of ``recslm run``.

Field names follow DESIGN.md; fields may be added, never renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from recslm.evaluate.metrics import delta_pct
from recslm.jsonfile import write_json

Role = Literal["teacher", "student", "sft_baseline", "pruned", "quantized"]


class StageRecord(BaseModel):
    key: str
    uri: str
    cached: bool
    wall_s: float
    metrics: dict[str, Any] = Field(default_factory=dict)
    worker: dict[str, str] | None = None  # where it ran in this run (backend, Slurm job id or pod); None when cached


class ModelRecord(BaseModel):
    name: str
    role: Role
    params: int
    bytes: int
    auc: dict[str, float]
    auc_mean: float
    auc_delta_pct: float  # vs the teacher
    key: str
    parent: str | None = None  # the model this one was pruned or quantized from
    auc_delta_vs_parent_pct: float | None = None


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


def model_record(name: str, role: Role, eval_metrics: dict[str, Any], key: str, teacher_auc_mean: float) -> ModelRecord:
    """A model's line in the summary from its evaluate-stage metrics."""
    return ModelRecord(
        name=name,
        role=role,
        params=int(eval_metrics["params"]),
        bytes=int(eval_metrics["bytes"]),
        auc={k: float(v) for k, v in eval_metrics["auc"].items()},
        auc_mean=float(eval_metrics["auc_mean"]),
        auc_delta_pct=delta_pct(float(eval_metrics["auc_mean"]), teacher_auc_mean),
        key=key,
    )


def derived_record(name: str, role: Role, eval_metrics: dict[str, Any], key: str, teacher_auc_mean: float, parent: ModelRecord) -> ModelRecord:
    """The line of a model pruned or quantized from ``parent``: also its delta against the parent."""
    record = model_record(name, role, eval_metrics, key, teacher_auc_mean)
    return record.model_copy(update={"parent": parent.name, "auc_delta_vs_parent_pct": delta_pct(record.auc_mean, parent.auc_mean)})


def write_summary(summary: RunSummary, run_dir: Path) -> Path:
    """Write summary.json atomically (readers never see half a file)."""
    return write_json(run_dir / "summary.json", summary.model_dump(mode="json"))
