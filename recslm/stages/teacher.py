"""The teacher stage: train a model from a spec on the answer token (resuming from its
checkpoints), or load a trained one from a path, optionally fine-tuning it to the task."""

from __future__ import annotations

from typing import Any

from recslm.progress import progress_bar
from recslm.stages.base import Stage, StageContext, without_later_defaults
from recslm.store import ArtifactRef


def key(config: Any) -> Any:
    """The teacher section and seed; a loaded teacher also by the digest of its folder (``make
    teacher`` rebuilds models/demo-teacher in place: the store must not serve the old one)."""
    section = without_later_defaults(config.teacher, ("fine_tune", "deepspeed", "task_weights", "ranking_loss"))  # existing keys hold
    if config.teacher.path is not None:
        from recslm.store.digest import folder_digest

        section["digest"] = folder_digest(config.teacher.path, "teacher.path")
    return {"teacher": section, "seed": config.run.seed}


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    if config.task == "generative":
        return _response_teacher(config, ctx, inputs)
    from recslm.train.teacher import make_teacher  # torch, Trainer: only when the stage runs

    if config.teacher.path is not None and not config.teacher.fine_tune:  # loaded, not trained: no steps to show
        return make_teacher(config.teacher, inputs["data"].path, ctx.out, ctx.work / "checkpoints", seed=config.run.seed)
    with progress_bar("teacher SFT steps") as on_step:
        return make_teacher(config.teacher, inputs["data"].path, ctx.out, ctx.work / "checkpoints",
                            seed=config.run.seed, on_log=ctx.log_curve, on_step=on_step)  # fmt: skip


def _response_teacher(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    """The generative task's teacher: response SFT with val-loss validation, or a loaded checkpoint."""
    from recslm.train.deepspeed import deepspeed_config  # torch, Trainer: only when the stage runs
    from recslm.train.responses import make_response_teacher

    with progress_bar("teacher response-SFT steps") as on_step:
        return make_response_teacher(config.teacher, inputs["data"].path, ctx.out, ctx.work / "checkpoints", seed=config.run.seed,
                                     on_log=ctx.log_curve, on_step=on_step, deepspeed=deepspeed_config(config.teacher.deepspeed, config.teacher.train))  # fmt: skip


STAGE = Stage("teacher", key, body)
