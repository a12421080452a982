"""The profile and prune stages as Prefect tasks."""

from __future__ import annotations

from typing import Any

from prefect import task

from recslm.config import PipelineConfig
from recslm.progress import progress_bar
from recslm.store import ArtifactRef
from tasks.dispatch import dispatchable
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="profile", **TASK_DEFAULTS)
@dispatchable
def profile_task(config: PipelineConfig, tracking: TrackingHandle, model: ArtifactRef, model_name: str) -> ArtifactRef:
    """Attention vs MLP prefill time per layer of the selected student (the paper's Figure 4)."""

    def body(out, work, run):
        from recslm.prune.stage import profile_student  # heavy: only when the stage runs

        metrics = profile_student(model.path / "model", out, config.profile)
        run.log_artifact(str(out / "profile.png"))
        return metrics

    # timings depend on the machine: the key still names the model and lengths, so a rerun on
    # the same store reuses them; delete the artifact (or change repeats) to time again
    stage_config = config.profile.model_dump(mode="json", exclude={"min_share"})
    return run_stage("profile", config, tracking, stage_config, {"model": model}, body, name=f"profile-{model_name}", runtime=config.runtime)


def prune_stage_config(config: PipelineConfig) -> dict[str, Any]:
    """What decides the pruned weights: the prune section, the recipe used to re-distill, the seed."""
    prune = config.prune.model_dump(mode="json", exclude={"enabled"})
    distill = config.distill.model_dump(mode="json", include={"kd_weight", "ce_weight", "prompt_weight", "beta", "temperature"})
    return {"prune": prune, "recipe": distill, "seed": config.student_seed(), "min_share": config.profile.min_share}


@task(name="prune", **TASK_DEFAULTS)
@dispatchable
def prune_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, model: ArtifactRef, profile: ArtifactRef, model_name: str) -> ArtifactRef:
    """OSSCAR (or a baseline) on the selected student, one-shot or gradual with re-distillation."""

    def body(out, work, run):
        from recslm.evaluate.profile import recommend
        from recslm.prune.stage import prune_student

        def on_layer(record) -> None:
            step = record.layer
            run.tracker.log_metrics(run.run_id, {f"layer/{record.part}_relative_error": record.relative_error}, step=step)

        with progress_bar(f"re-distilling {model_name}") as on_step:
            return prune_student(
                model.path, data.path, out, work,
                prune=config.prune, distill=config.distill, evaluate=config.evaluate, profile=config.profile,
                recommendation=recommend(profile.metrics["shares"], config.profile.min_share), seed=config.student_seed(),
                on_log=run.log_curve, on_step=on_step, on_layer=on_layer,
            )  # fmt: skip

    inputs = {"data": data, "model": model}
    if config.prune.parts == "auto":
        inputs["profile"] = profile
    return run_stage("prune", config, tracking, prune_stage_config(config), inputs, body, name=f"prune-{model_name}", runtime=config.runtime)
