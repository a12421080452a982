"""The distill, teacher_logits and select stages as Prefect tasks."""

from __future__ import annotations

from typing import Any, Literal

from prefect import task

from recslm.config import PipelineConfig, StudentSpec
from recslm.progress import progress_bar
from recslm.store import ArtifactRef
from tasks.dispatch import dispatchable
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


def distill_stage_config(config: PipelineConfig, spec: StudentSpec, role: Literal["student", "sft_baseline"]) -> dict[str, Any]:
    """What decides a student's weights, and nothing else (so unrelated edits keep the cache)."""
    from recslm.train.student import sft_phases  # light: pydantic only

    if role == "sft_baseline":
        phases = [p.model_dump(mode="json") for p in sft_phases(config.distill)]
        return {"student": spec.model_dump(mode="json"), "role": role, "phases": phases, "seed": config.student_seed()}
    distill = config.distill.model_dump(mode="json", exclude={"sft_baseline", "seed"})
    if config.distill.teacher_logits == "online":
        distill.pop("topk")
    return {"student": spec.model_dump(mode="json"), "role": role, "distill": distill, "seed": config.student_seed()}


@task(name="teacher_logits", **TASK_DEFAULTS)
@dispatchable
def teacher_logits_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, teacher: ArtifactRef) -> ArtifactRef:
    """The teacher's top-k log-probs over the training data, computed once for every student."""

    def body(out, work, run):
        from recslm.train.student import make_teacher_topk  # heavy: only when the stage runs

        with progress_bar(f"teacher top-{config.distill.topk}") as on_progress:
            return make_teacher_topk(
                data.path, teacher.path, out, config.distill.topk,
                groups_per_batch=config.evaluate.groups_per_batch,
                trust_remote_code=config.teacher.trust_remote_code, on_progress=on_progress,
            )

    return run_stage("teacher_logits", config, tracking, {"topk": config.distill.topk}, {"data": data, "teacher": teacher}, body, runtime=config.runtime)


@task(name="distill", **TASK_DEFAULTS)
@dispatchable
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
    name = spec.model_name(role)

    def body(out, work, run):
        from recslm.train.deepspeed import deepspeed_config  # heavy: only when the stage runs
        from recslm.train.student import make_student

        with progress_bar(f"{name} steps") as on_step:
            return make_student(
                spec, config.distill, role, data.path, teacher.path, out, work / "checkpoints",
                seed=config.student_seed(),
                topk_dir=topk.path if topk is not None else None,
                deepspeed=deepspeed_config(config.distill.deepspeed, config.distill.phases[0].train),
                trust_remote_code=config.teacher.trust_remote_code,
                on_log=run.log_curve, on_step=on_step,
            )

    inputs = {"data": data} if role == "sft_baseline" else {"data": data, "teacher": teacher}
    if topk is not None and role == "student":
        inputs["teacher_logits"] = topk
    return run_stage("distill", config, tracking, distill_stage_config(config, spec, role), inputs, body, name=f"distill-{name}", runtime=config.runtime)


@task(name="select", **TASK_DEFAULTS)
def select_task(config: PipelineConfig, tracking: TrackingHandle, teacher_eval: ArtifactRef, student_evals: dict[str, ArtifactRef]) -> ArtifactRef:
    """Keep the smallest distilled student within ``select.max_auc_drop_pct`` of the teacher."""

    def body(out, work, run):
        from recslm.evaluate.metrics import delta_pct
        from recslm.select import Candidate, select_smallest

        teacher_auc = float(teacher_eval.metrics["auc_mean"])
        candidates = [
            Candidate(name=name, params=int(ref.metrics["params"]), auc_mean=float(ref.metrics["auc_mean"]),
                      auc_delta_pct=delta_pct(float(ref.metrics["auc_mean"]), teacher_auc), auc=ref.metrics["auc"])
            for name, ref in student_evals.items()
        ]
        selection = select_smallest(candidates, teacher_auc, config.select.max_auc_drop_pct)
        (out / "selection.txt").write_text(selection.table() + "\n")
        return selection.model_dump(mode="json")

    inputs = {"teacher_eval": teacher_eval, **{f"eval.{name}": ref for name, ref in student_evals.items()}}
    return run_stage("select", config, tracking, config.select, inputs, body)
