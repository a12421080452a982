"""The deploy stage as a Prefect task: deploy the final model, smoke-test it, benchmark it."""

from __future__ import annotations

from typing import Any

from prefect import task

from recslm.config import PipelineConfig
from recslm.store import ArtifactRef
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


def deploy_stage_config(config: PipelineConfig, run_id: str) -> dict[str, Any]:
    """A verified-and-benchmarked deploy of the same model with the same settings is reused
    on a rerun; one that keeps running is an action of its run, never reused."""
    stage = {"serve": config.serve.model_dump(mode="json"), "bench": config.bench.model_dump(mode="json"), "split": config.evaluate.split}
    if config.serve.keep_running:
        stage["run_id"] = run_id
    return stage


@task(name="deploy", **TASK_DEFAULTS)
def deploy_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, model: ArtifactRef, model_name: str, run_id: str) -> ArtifactRef:
    def body(out, work, run):
        from recslm.serve.stage import deploy_model  # heavy: only when the stage runs

        return deploy_model(
            model.path / "model", data.path, out, version=run_id, serve=config.serve, bench=config.bench, evaluate=config.evaluate,
            state_dir=config.run.root / "serve" / model_name,
        )  # fmt: skip

    return run_stage("deploy", config, tracking, deploy_stage_config(config, run_id), {"data": data, "model": model}, body, name=f"deploy-{model_name}")
