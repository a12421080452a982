"""What people see in the Prefect and MLflow UIs, rendered by a real browser (Debian's headless Chromium).

The Prefect UI is served by a second `prefect server start` on the test session's database, so
it shows what the session did: the README's deployments and the smoke run's results artifact.
The MLflow UI is `mlflow server` on the smoke run's SQLite backend. Each page is rendered
twice, as its DOM (asserted on: the text a person must see) and as a screenshot (the README's
pictures: ``RECSLM_UPDATE_UI_PICTURES=1`` writes them to ``docs/ui/``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from recslm.serve.server import free_port
from tests.servers import stop_process

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PICTURES = REPO / "docs" / "ui"
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI needs Debian's chromium for the UI tests (make test installs it as root)")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make chromium)")


def _wait(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")


def render(url: str, picture: str, tmp_path: Path, *, expect: tuple[str, ...] = (), budget_ms: int = 12_000, size: str = "1400,900") -> str:
    """The page's screenshot, kept as ``picture``; and its DOM after its scripts ran, rendered
    again (with more virtual time) until it shows every ``expect`` text, three tries at most:
    a single-page app fills its DOM after its API calls answer, which a busy machine delays."""
    base = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}"]
    shot = tmp_path / picture
    subprocess.run([*base, f"--virtual-time-budget={budget_ms}", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000, f"{picture}: the screenshot is blank"
    if os.environ.get("RECSLM_UPDATE_UI_PICTURES"):
        PICTURES.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, PICTURES / picture)
    dom = ""
    for attempt in range(3):
        dom = subprocess.run([*base, f"--virtual-time-budget={budget_ms * (attempt + 1)}", "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        dom = re.sub(r"\s+", " ", dom)
        if all(text in dom for text in expect):
            break
    missing = [text for text in expect if text not in dom]
    assert not missing, f"{url} does not show {missing}"
    return dom


@pytest.fixture(scope="module")
def prefect_ui(prefect_harness, smoke):
    """The Prefect UI over the session's database, with the README's deployments in it."""
    from prefect.settings import PREFECT_API_URL, get_current_settings

    from tests.helpers import run_readme_deploy_commands

    run_readme_deploy_commands(REPO, PREFECT_API_URL.value())
    port = free_port()
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
    env.update({"PREFECT_UI_ENABLED": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"})
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/api/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def mlflow_ui(smoke, tmp_path_factory):
    port = free_port()
    backend = smoke["cfg"].tracking_uri()
    artifacts = tmp_path_factory.mktemp("mlflow-server-artifacts")  # runs logged through the server keep theirs here, not in ./mlartifacts
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--artifacts-destination", str(artifacts)], cwd=artifacts,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@needs_browser
def test_prefect_shows_the_deployments_the_run_form_and_the_results(prefect_ui, smoke, tmp_path):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    # the smoke run "first" (other tests' runs in this session have results artifacts too)
    first_run = MlflowClient(tracking_uri=smoke["cfg"].tracking_uri()).get_run(smoke["first"].mlflow_run_id)
    flow_run_id = first_run.data.tags["recslm.prefect.flow_run_id"]
    with get_client(sync_client=True) as client:
        on_demand = next(d for d in client.read_deployments() if d.name == "on-demand")
        (results,) = [a for a in client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
                      if a.key == "recslm-results"]  # fmt: skip
    render(f"{prefect_ui}/deployments", "prefect-deployments.png", tmp_path, expect=("nightly", "on-demand", "champion", "k8s-gpu", "recslm-retrain"))
    render(f"{prefect_ui}/deployments/deployment/{on_demand.id}/run", "prefect-run-form.png", tmp_path, size="1400,1100",
           expect=("Config File", "Overrides", "Run Id"))  # fmt: skip
    render(f"{prefect_ui}/artifacts/artifact/{results.id}", "prefect-results-artifact.png", tmp_path, size="1400,1300",
           expect=("Winner (chosen on val)", smoke["first"].winner, "logistic_regression", "Stages"))  # fmt: skip


@needs_browser
def test_mlflow_opens_the_training_view_with_datasets_and_the_registered_model(mlflow_ui, smoke, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=smoke["cfg"].tracking_uri())
    experiment = client.get_experiment_by_name("recslm-smoke")
    # the runs table (the training view), with the dataset column filled
    render(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs", "mlflow-runs.png", tmp_path, size="1600,1000", expect=("first", "movielens records"))
    model = smoke["cfg"].registry.model_name or smoke["cfg"].run.name
    render(f"{mlflow_ui}/#/models/{model}", "mlflow-model.png", tmp_path, expect=(model, "champion"))


def test_the_readme_shows_the_pictures():
    readme = (REPO / "README.md").read_text()
    for picture in ("prefect-deployments.png", "prefect-run-form.png", "prefect-results-artifact.png", "mlflow-runs.png", "mlflow-model.png"):
        assert f"docs/ui/{picture}" in readme and (PICTURES / picture).stat().st_size > 10_000, picture


@needs_browser
@pytest.mark.timeout(900)
def test_a_run_started_from_the_on_demand_deployment_shows_its_results_and_links_to_mlflow(prefect_ui, mlflow_ui, tmp_path):
    """As an operator would: the on-demand deployment (the README's), a process worker, a small
    config; the finished run's results artifact renders in the Prefect UI and links to its
    run on the MLflow server, which lists the run with its dataset."""
    import yaml
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    from tests.helpers import trimmed_smoke

    raw = trimmed_smoke(tmp_path / "runs", students=0)
    raw["baselines"] = {"enabled": True}
    raw["tracking"] = {"uri": mlflow_ui, "experiment": "recslm-ui"}
    raw["registry"] = {"enabled": False}
    config = tmp_path / "on-demand.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1", "RECSLM_HOME": str(REPO),
           "PYTHONPATH": str(REPO), "RECSLM_PROGRESS": "0", "OMP_NUM_THREADS": "1"}  # fmt: skip
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "recslm-process", "--type", "process"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("recslm-retrain/on-demand")
            run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": {"config_file": str(config), "run_id": "from-ui"}})
            deadline = time.monotonic() + 800
            while not (state := client.read_flow_run(run.id).state).is_final():
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(2)
            assert state.is_completed(), (state, (tmp_path / "worker.log").read_text()[-3000:])
            parent = MlflowClient(tracking_uri=mlflow_ui).search_runs(
                [MlflowClient(tracking_uri=mlflow_ui).get_experiment_by_name("recslm-ui").experiment_id], "tags.`recslm.run_id` = 'from-ui'"
            )[0]
            assert parent.data.tags["recslm.prefect.deployment"] == "on-demand"
            compress_run = parent.data.tags["recslm.prefect.flow_run_id"]
            (results,) = [a for a in client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[compress_run])))
                          if a.key == "recslm-results"]  # fmt: skip
    finally:
        stop_process(worker)
        log.close()
    link = f"{mlflow_ui}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    assert link in results.data
    page = render(f"{prefect_ui}/artifacts/artifact/{results.id}", "prefect-on-demand-artifact.png", tmp_path, expect=("from-ui", "logistic_regression"))
    assert link in page.replace("&amp;", "&")
