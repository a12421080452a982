"""The profile stage: the selected student's prefill time per layer, attention vs MLP, at
``profile.context_lengths`` (the paper's Figure 4), and which parts are worth pruning."""

from __future__ import annotations

from typing import Any

from recslm.stages.base import Stage, StageContext
from recslm.store import ArtifactRef


def key(config: Any, model_name: str) -> Any:
    """Timings depend on the machine: the key names the model and lengths, so a rerun on the same
    store reuses them (delete the artifact, or change repeats, to time again). ``min_share`` only
    reads the result (prune's key has it)."""
    return config.profile.model_dump(mode="json", exclude={"min_share"})


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], model_name: str) -> dict[str, Any]:
    from recslm.prune.gradual import profile_student  # torch, matplotlib: only when the stage runs

    metrics = profile_student(inputs["model"].path / "model", ctx.out, config.profile)
    ctx.log_artifact(str(ctx.out / "profile.png"))
    return metrics


STAGE = Stage("profile", key, body, label=lambda model_name: f"profile-{model_name}")
