"""The select stage: the smallest distilled student whose mean *val* AUC is within
``select.max_auc_drop_pct`` of the teacher's (the decision itself is :mod:`recslm.select`).
It reads only the ``val_*`` metrics of the evaluations: the test split is reported, never chosen on."""

from __future__ import annotations

from typing import Any

from recslm.stages.base import Stage, StageContext, without_later_defaults
from recslm.store import ArtifactRef

TEACHER = "teacher_eval"
STUDENT_PREFIX = "eval."  # one input per student: eval.<name>, its evaluate artifact


def key(config: Any) -> Any:
    return without_later_defaults(config.select, ("max_val_loss_increase_pct",))


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    from recslm.evaluate.metrics import delta_pct
    from recslm.select import Candidate, select_smallest

    if config.task == "generative":
        return _by_val_loss(config, ctx, inputs)
    teacher_auc = float(inputs[TEACHER].metrics["val_auc_mean"])
    candidates = [
        Candidate(name=role.removeprefix(STUDENT_PREFIX), params=int(ref.metrics["params"]), auc_mean=float(ref.metrics["val_auc_mean"]),
                  auc_delta_pct=delta_pct(float(ref.metrics["val_auc_mean"]), teacher_auc), auc=ref.metrics["val_auc"])
        for role, ref in inputs.items() if role.startswith(STUDENT_PREFIX)
    ]  # fmt: skip
    selection = select_smallest(candidates, teacher_auc, config.select.max_auc_drop_pct)
    (ctx.out / "selection.txt").write_text(selection.table() + "\n")
    return selection.model_dump(mode="json")


def _by_val_loss(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    """The generative task: the smallest student within ``select.max_val_loss_increase_pct`` of the teacher's val loss."""
    from recslm.select import LossCandidate, select_smallest_by_loss

    candidates = [LossCandidate(name=role.removeprefix(STUDENT_PREFIX), params=int(ref.metrics["params"]), val_loss=float(ref.metrics["val_loss"]))
                  for role, ref in inputs.items() if role.startswith(STUDENT_PREFIX)]  # fmt: skip
    selection = select_smallest_by_loss(candidates, float(inputs[TEACHER].metrics["val_loss"]), config.select.max_val_loss_increase_pct)
    (ctx.out / "selection.txt").write_text(selection.table() + "\n")
    return selection.model_dump(mode="json")


def inputs_for(teacher_eval: ArtifactRef, student_evals: dict[str, ArtifactRef]) -> dict[str, ArtifactRef]:
    """The stage's inputs: the teacher's evaluation and each student's, by name."""
    return {TEACHER: teacher_eval, **{f"{STUDENT_PREFIX}{name}": ref for name, ref in student_evals.items()}}


STAGE = Stage("select", key, body, computes=False)
