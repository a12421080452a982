"""The teacher_logits, distill and select stages as Prefect tasks."""

from __future__ import annotations

from typing import Literal

from prefect import task

from recslm.config import PipelineConfig, StudentSpec
from recslm.stages import distill, select, teacher_logits
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="teacher_logits", **TASK_DEFAULTS)
def teacher_logits_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, teacher: ArtifactRef) -> ArtifactRef:
    """The teacher's top-k log-probs over the training data, computed once for every student."""
    return run_stage(teacher_logits.STAGE, config, tracking, {"data": data, "teacher": teacher}, remote=True)


@task(name="distill", **TASK_DEFAULTS)
def distill_task(
    config: PipelineConfig,
    tracking: TrackingHandle,
    data: ArtifactRef,
    teacher: ArtifactRef,
    spec: StudentSpec,
    role: Literal["student", "sft_baseline"],
    topk: ArtifactRef | None = None,
) -> ArtifactRef:
    """Distill one student from the teacher (or fine-tune it with cross-entropy: the SFT baseline)."""
    return run_stage(distill.STAGE, config, tracking, {"data": data, "teacher": teacher, "teacher_logits": topk}, remote=True, student=spec.name, role=role)


@task(name="select", **TASK_DEFAULTS)
def select_task(config: PipelineConfig, tracking: TrackingHandle, teacher_eval: ArtifactRef, student_evals: dict[str, ArtifactRef]) -> ArtifactRef:
    """Keep the smallest distilled student within ``select.max_auc_drop_pct`` of the teacher."""
    return run_stage(select.STAGE, config, tracking, select.inputs_for(teacher_eval, student_evals))
