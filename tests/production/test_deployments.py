"""deployments/prefect.yaml, read by Prefect's own loader and checked against the flows it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"


@pytest.fixture(scope="module")
def deployments() -> list[dict]:
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from prefect.cli.deploy._models import PrefectYamlModel
    from rich.console import Console

    PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))  # raises on a bad file (the CLI only warns)
    configs, actions = _load_deploy_configs_and_actions(PREFECT_YAML, console=Console(quiet=True))
    assert actions["pull"], "workers must change into the project folder"
    return configs


@pytest.fixture(scope="module")
def by_name(deployments) -> dict[str, dict]:
    return {d["name"]: d for d in deployments}


def _flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(REPO / entrypoint))


def test_every_deployment_is_loaded_and_names_a_flow_that_accepts_its_parameters(deployments):
    assert len(deployments) == len(yaml.safe_load(PREFECT_YAML.read_text())["deployments"]) == 6
    for deployment in deployments:
        flow = _flow(deployment["entrypoint"])
        if deployment["entrypoint"] == "flows/stage.py:stage":  # its call comes from the pipeline at run time
            continue
        flow.validate_parameters(deployment.get("parameters", {}))  # pydantic-validated like a UI submission
        assert deployment["work_pool"]["name"] in {"recslm-process", "recslm-slurm", "recslm-k8s"}


def test_nightly_retraining_is_scheduled_and_never_overlaps(by_name):
    from prefect.client.schemas.schedules import CronSchedule

    nightly = by_name["nightly"]
    (schedule,) = nightly["schedules"]
    assert CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).cron == "0 2 * * *" and schedule["active"]
    assert nightly["concurrency_limit"] == 1 and nightly["entrypoint"] == "flows/retrain.py:retrain"


def test_ui_parameters_are_a_typed_form_that_rejects_bad_values(by_name):
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema

    flow = _flow(by_name["on-demand"]["entrypoint"])
    schema = json.dumps(parameter_schema(flow).model_dump())
    for field in ("config_file", "overrides", "run_id"):
        assert field in schema
    with pytest.raises(ParameterTypeError):
        flow.validate_parameters({"params": {"config_file": "configs/demo.yaml", "overrides": "not-a-list"}})
    assert all(by_name[n]["enforce_parameter_schema"] for n in ("nightly", "on-demand", "slurm", "kubernetes", "champion"))


def test_backends_and_the_stage_deployment_match_the_config_defaults(by_name):
    from recslm.config import KubernetesConfig, load_config

    k8s = KubernetesConfig()
    stage = by_name[k8s.deployment]
    assert stage["entrypoint"] == "flows/stage.py:stage" and _flow(stage["entrypoint"]).name == "recslm-stage"
    assert stage["work_pool"]["name"] == k8s.work_pool
    for name, backend in (("slurm", "slurm"), ("kubernetes", "kubernetes")):
        params = by_name[name]["parameters"]["params"]
        config = load_config(REPO / params["config_file"], params["overrides"])
        assert config.execution.backend == backend
    on_cluster = load_config(REPO / "configs/demo.yaml", by_name["kubernetes"]["parameters"]["params"]["overrides"])
    assert on_cluster.store.uri.startswith("s3://") and on_cluster.serve.target == "kubernetes"
    # the deploy stage talks to the API server as the deployer (infra/k8s/recslm-deployer.yaml)
    assert by_name["kubernetes"]["work_pool"]["job_variables"]["service_account_name"] == "recslm-deployer"
    assert by_name["kubernetes"]["work_pool"]["job_variables"]["mount_service_account_token"] is True


def test_gpu_job_variables_exist_in_the_work_pool_template(by_name):
    template = json.loads((REPO / "infra" / "prefect" / "k8s-gpu-job-template.json").read_text())
    variables = set(template["variables"]["properties"])
    for deployment in by_name.values():
        if deployment["work_pool"]["name"] == "recslm-k8s":
            assert set(deployment["work_pool"].get("job_variables", {})) <= variables, deployment["name"]
    assert by_name["k8s-gpu"]["work_pool"]["job_variables"]["gpus"] >= 1


def test_deploy_champion_deploys_an_alias(by_name):
    champion = by_name["champion"]
    assert champion["entrypoint"] == "flows/deploy_champion.py:deploy_champion"
    assert champion["parameters"]["params"]["alias"] == "champion"


@pytest.mark.timeout(600)
def test_the_readmes_production_commands_deploy_all_six_deployments(prefect_harness):
    """Run the README's commands verbatim (all but the long-running worker) against a Prefect
    server with none of their pools, then read back what the UI shows: six deployments, the
    nightly schedule and the on-demand form's parameter schema."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from tests.helpers import readme_deploy_commands, run_readme_deploy_commands

    commands = readme_deploy_commands(REPO / "README.md")
    assert commands[-1].startswith("prefect worker start"), commands
    pools = {c.split()[3] for c in commands if c.startswith("prefect work-pool create")}
    assert pools == {"recslm-process", "recslm-slurm", "recslm-k8s"}  # every pool prefect.yaml names
    run_readme_deploy_commands(REPO, PREFECT_API_URL.value())
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments() if d.work_pool_name in pools}
        assert set(deployments) == {"nightly", "on-demand", "slurm", "kubernetes", "k8s-gpu", "champion"}
        (schedule,) = deployments["nightly"].schedules
        assert schedule.schedule.cron == "0 2 * * *" and schedule.active
        form = deployments["on-demand"].parameter_openapi_schema
        params = form["definitions"]["RetrainParams"]["properties"] if "definitions" in form else form["$defs"]["RetrainParams"]["properties"]
        assert set(params) == {"config_file", "overrides", "run_id"}
