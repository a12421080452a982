"""The work-pool backend (``execution.backend: kubernetes``) end to end, with a process pool.

There is no Kubernetes cluster here, but the backend's logic does not depend on the pool
type: heavy stages become flow runs of the ``recslm-stage`` deployment, a Prefect worker
picks them up and runs them in their own processes, and the pipeline reads their artifacts
from the shared store. This runs exactly that against the test Prefect server with a real
``prefect worker`` process (on the cluster the worker would start a GPU Job instead).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recslm.config import PipelineConfig
from tests.helpers import trimmed_smoke
from tests.servers import stop_process

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
POOL, DEPLOYMENT = "recslm-test-pool", "test-pool"


@pytest.fixture(scope="module")
def stage_worker(prefect_harness, tmp_path_factory):
    """The recslm-stage flow deployed on a process pool, and a worker serving that pool."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    from flows.stage import stage

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    stage.from_source(source=str(REPO), entrypoint="flows/stage.py:stage").deploy(name=DEPLOYMENT, work_pool_name=POOL, print_next_steps=False)
    log = (tmp_path_factory.mktemp("worker") / "worker.log").open("w")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    yield
    stop_process(worker)
    log.close()


def _config(root: Path) -> PipelineConfig:
    """The smoke data and teacher only (two heavy stages: teacher and its evaluation)."""
    raw = trimmed_smoke(root, students=0)
    raw["execution"] = {"backend": "kubernetes", "retries": 0, "kubernetes": {"work_pool": POOL, "deployment": DEPLOYMENT, "gpus": None}}
    return PipelineConfig.model_validate(raw)


@pytest.mark.timeout(900)
def test_heavy_stages_run_as_flow_runs_on_the_work_pool(stage_worker, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.compress import compress

    started = time.monotonic()
    summary = compress(_config(tmp_path / "run"), run_id="on-pool")
    assert summary.stages["data"].worker["backend"] == "local"
    flow_run_ids = []
    for name in ("teacher", "evaluate"):
        worker = summary.stages[name].worker
        assert worker is not None and worker["backend"] == "kubernetes", name
        flow_run_ids.append(worker["job_id"])
    with get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            run = client.read_flow_run(run_id)
            assert run.state.is_completed() and run.work_pool_name == POOL
            assert client.read_deployment(run.deployment_id).name == DEPLOYMENT
            assert run.parameters["call"]["stage"] in ("teacher", "evaluate")
    assert summary.models[0].auc_mean > 0.5
    print(f"two stages on the work pool: {time.monotonic() - started:.0f} s")

    # a rerun looks the artifacts up first: no flow run, no job
    again = compress(_config(tmp_path / "run"), run_id="on-pool-again")
    assert all(record.cached and record.worker is None for record in again.stages.values())
