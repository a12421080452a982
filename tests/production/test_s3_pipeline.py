"""The smoke pipeline in production mode: its artifact store on an S3-compatible server (moto,
localhost) and its tracking and registry on an MLflow server (SQLite backend, run artifacts
proxied to S3), each a real server on localhost."""

from __future__ import annotations

import pytest

from tests.servers import MLFLOW_ARTIFACT_BUCKET, mlflow_server
from tests.servers import S3_SECRET as SECRET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_server(s3_endpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(folder, s3_endpoint) as url:
        yield url, folder


def test_smoke_pipeline_publishes_to_s3_and_a_fresh_worker_reuses_everything(s3_endpoint, tracking_server, prefect_harness, repo_root, tmp_path):
    import boto3
    from mlflow.tracking import MlflowClient

    from flows.compress import compress
    from recslm.config import load_config
    from recslm.store.s3 import S3Store

    store_uri = "s3://artifacts/smoke-pipeline"
    mlflow_url, mlflow_folder = tracking_server
    first_root, second_root = tmp_path / "worker-a", tmp_path / "worker-b"
    cfg = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={first_root}", f"store.uri={store_uri}", f"tracking.uri={mlflow_url}"])
    first = compress(cfg, run_id="s3-first")
    assert not any(rec.cached for rec in first.stages.values())
    keys = S3Store(store_uri, tmp_path / "inspect").object_keys()
    for name, rec in first.stages.items():
        stage = name.split(".")[0]
        assert rec.uri == f"{store_uri}/{stage}/{rec.key}"
        assert f"smoke-pipeline/{stage}/{rec.key}/stage.json" in keys, name
    assert any(k.endswith("/model/model.safetensors") for k in keys)
    # another machine: empty local cache and its own MLflow, same S3 store -> nothing recomputed
    other = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={second_root}", f"store.uri={store_uri}", f"tracking.uri={mlflow_url}"])
    second = compress(other, run_id="s3-second")
    assert all(rec.cached for rec in second.stages.values())
    assert [m.auc_mean for m in second.models] == [m.auc_mean for m in first.models]

    # tracking went to the server: both pipeline runs with their stage runs, the summary in S3 through it
    client = MlflowClient(mlflow_url)
    experiment = client.get_experiment_by_name(cfg.run.name)
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = {r.data.tags.get("recslm.run_id"): r for r in runs if "recslm.run_id" in r.data.tags}
    assert set(parents) == {"s3-first", "s3-second"}
    assert sum(r.data.tags.get("mlflow.parentRunId") == parents["s3-first"].info.run_id for r in runs) >= len(first.stages)
    assert parents["s3-first"].info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=MLFLOW_ARTIFACT_BUCKET).get("Contents", [])]
    assert any(k.endswith("/summary.json") and parents["s3-first"].info.run_id in k for k in stored)

    # registry: every candidate of the first run is a version pointing at its S3 artifact; the
    # release candidate is champion; the cached second run registered nothing new
    versions = client.search_model_versions(f"name = '{cfg.run.name}'")
    candidates = [m for m in first.models if m.role in ("student", "pruned", "quantized")]
    assert len(versions) == len(candidates) and first.registry["new_versions"] and not second.registry["new_versions"]
    by_name = {v.tags["recslm.name"]: v for v in versions}
    assert set(by_name) == {m.name for m in candidates}
    for model in candidates:
        uri = first.stages[_stage_of(first, model.key)].uri
        assert uri.startswith(store_uri) and by_name[model.name].source == f"{uri}/model"
    champion = client.get_model_version_by_alias(cfg.run.name, "champion")
    assert champion.tags["recslm.name"] == first.registry["candidate"] == f"{first.winner}-pruned"
    assert second.registry["promotion"]["reason"] == "already the champion"

    # the S3 secret from the environment appears in no file either run wrote (logs, artifacts),
    # nor in the MLflow server's database or the artifacts it stored
    for root in (first_root, second_root, mlflow_folder):
        for path in root.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    for key in stored:
        assert SECRET.encode() not in boto3.client("s3").get_object(Bucket=MLFLOW_ARTIFACT_BUCKET, Key=key)["Body"].read(), key


def _stage_of(summary, key: str) -> str:
    return next(name for name, record in summary.stages.items() if record.key == key)
