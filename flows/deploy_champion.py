"""Deploy whatever the registry's ``champion`` alias points at (the deploy-champion deployment).

Promotion and deployment are separate on purpose: a retraining run may promote a new
champion at night, and the fleet picks it up when this flow runs (on a schedule, by hand
from the Prefect UI, or after a promotion). The champion's version tags name its artifact
(stage and content key) and the data it was evaluated on; both are read from the store, the
deploy stage smoke-tests the model against its offline scores through the new version and
only then moves traffic, keeping the previous version on failure.
"""

from __future__ import annotations


from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from recslm.config import load_config
from recslm.errors import CheckpointError, ConfigError
from recslm.store import ArtifactRef, store_for
from tasks.options import with_retries
from tasks.register import registered_name
from tasks.serve import deploy_task
from tasks.tracking import Tracker, artifact_location_for


class DeployChampionParams(BaseModel):
    """What the deploy-champion deployment takes from the Prefect UI."""

    config_file: str = Field("configs/demo.yaml", description="Pipeline config: its serve, store, tracking and registry sections are used.")
    overrides: list[str] = Field(default_factory=list, description="Overrides as dotted key=value (e.g. serve.target=kubernetes).")
    alias: str = Field("champion", description="Registry alias to deploy (champion, or challenger for a canary).")


@flow(name="recslm-deploy-champion", log_prints=True)
def deploy_champion(params: DeployChampionParams = DeployChampionParams()) -> dict:
    """Resolve the alias in the registry, fetch its artifact, deploy and verify it; return the deploy record."""
    logger = get_run_logger()
    config = load_config(params.config_file, params.overrides)
    name = registered_name(config)
    client = MlflowClient(tracking_uri=config.tracking_uri())
    try:
        version = client.get_model_version_by_alias(name, params.alias)
    except Exception as exc:  # noqa: BLE001 - MlflowException: no such model or alias
        raise ConfigError(f"registry: no version of {name!r} has the alias {params.alias!r} at {config.tracking_uri()} ({exc})") from exc
    tags = version.tags
    store = store_for(config)
    model = store.lookup(tags["recslm.stage"], tags["recslm.key"])
    data = store.lookup("data", tags["recslm.data_key"])
    if model is None or data is None:
        missing = "model" if model is None else "data"
        raise CheckpointError(f"registry: {name} v{version.version} ({params.alias}) names a {missing} artifact that is not in the store {config.store_uri()}")
    logger.info("deploying %s v%s (%s, %s) from %s", name, version.version, params.alias, tags.get("recslm.name"), model.uri)
    tracker = Tracker.start_pipeline(
        uri=config.tracking_uri(), experiment=config.tracking.experiment or config.run.name, run_name=f"deploy-{name}-v{version.version}",
        params={"alias": params.alias, "version": version.version}, tags={"recslm.deploys": f"{name}/{version.version}"},
        artifact_location=artifact_location_for(config.tracking_uri(), config.run.root),
    )  # fmt: skip
    try:
        deployed: ArtifactRef = with_retries(deploy_task, config)(config, tracker.handle, data, model, tags["recslm.name"], f"{name}-v{version.version}")
    except BaseException:
        tracker.end(tracker.handle.parent_run_id, status="FAILED")
        raise
    tracker.end(tracker.handle.parent_run_id)
    client.set_model_version_tag(name, version.version, "recslm.deployed", deployed.metrics["deploy"]["traffic_endpoint"])
    return {"model": name, "version": str(version.version), "alias": params.alias, **deployed.metrics}
