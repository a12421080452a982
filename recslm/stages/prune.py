"""The prune stage: OSSCAR (or a baseline) on the selected student, one-shot or gradual on
``prune.schedule``, re-distilled from the unpruned student after every step."""

from __future__ import annotations

from typing import Any

from recslm.progress import progress_bar
from recslm.stages.base import Stage, StageContext
from recslm.store import ArtifactRef

RECIPE_FIELDS = {"kd_weight", "ce_weight", "prompt_weight", "beta", "temperature"}


def key(config: Any, model_name: str) -> Any:
    """The prune section, the recipe used to re-distill, the seed, and the profile's threshold
    (with ``parts: auto`` the profile decides which parts are pruned). ``step_reports`` names
    the split the per-step AUCs are measured on (val: test is scored once, by evaluate)."""
    prune = config.prune.model_dump(mode="json", exclude={"enabled"})
    if prune["redistill"] is not None and prune["redistill"]["loss"] == "forward_kl":
        del prune["redistill"]["loss"]  # the default, left out: keys from before the setting existed still hold
    recipe = config.distill.model_dump(mode="json", include=RECIPE_FIELDS)
    return {"prune": prune, "recipe": recipe, "seed": config.student_seed(), "min_share": config.profile.min_share, "step_reports": "val"}


def uses(config: Any, model_name: str) -> set[str]:
    """The profile decides the result only with ``prune.parts: auto``."""
    return {"data", "model", "profile"} if config.prune.parts == "auto" else {"data", "model"}


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], model_name: str) -> dict[str, Any]:
    from recslm.evaluate.profile import recommend  # torch: only when the stage runs
    from recslm.prune.gradual import prune_student

    def on_layer(record) -> None:
        ctx.log_metrics({f"layer/{record.part}_relative_error": record.relative_error}, step=record.layer)

    profile = inputs.get("profile")
    recommendation = recommend(profile.metrics["shares"], config.profile.min_share) if profile is not None else None
    with progress_bar(f"re-distilling {model_name}") as on_step:
        return prune_student(
            inputs["model"].path, inputs["data"].path, ctx.out, ctx.work,
            prune=config.prune, distill=config.distill, evaluate=config.evaluate, profile=config.profile,
            recommendation=recommendation, seed=config.student_seed(), on_log=ctx.log_curve, on_step=on_step, on_layer=on_layer, task=config.task,
        )  # fmt: skip


STAGE = Stage("prune", key, body, uses=uses, label=lambda model_name: f"prune-{model_name}")
