"""The deploy stage: serve the final model (or a quantized variant), smoke-test it against its
offline scores, benchmark it, and stop it unless ``serve.keep_running``."""

from __future__ import annotations

from typing import Any

from recslm.stages.base import Stage, StageContext, dump
from recslm.store import ArtifactRef


def key(config: Any, model_name: str, run_id: str) -> Any:
    """A verified-and-benchmarked deploy of the same model with the same settings is reused on a
    rerun; one that keeps running (a Kubernetes deploy always does) is an action of its run,
    never reused."""
    stage = {"serve": dump(config.serve), "bench": dump(config.bench), "split": config.evaluate.split}
    if config.serve.keep_running or config.serve.target == "kubernetes":
        stage["run_id"] = run_id
    return stage


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], model_name: str, run_id: str) -> dict[str, Any]:
    from recslm.serve.release import deploy_model  # torch, httpx: only when the stage runs

    return deploy_model(
        inputs["model"].path / "model", inputs["data"].path, ctx.out, version=run_id, serve=config.serve, bench=config.bench,
        evaluate=config.evaluate, state_dir=config.run.root / "serve" / model_name,
        model_name=config.registered_model_name(), model_uri=f"{inputs['model'].uri}/model", task=config.task,
    )  # fmt: skip


STAGE = Stage("deploy", key, body, computes=False, label=lambda model_name, run_id: f"deploy-{model_name}")
