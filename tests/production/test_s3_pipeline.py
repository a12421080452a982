"""The smoke pipeline (one of each stage) in production mode: its artifact store on an S3-compatible server (moto,
localhost), its tracking and registry on an MLflow server (SQLite backend, run artifacts
proxied to S3), each a real server on localhost, and its deploy on the Kubernetes target
(against the in-memory cluster of :mod:`tests.fake_kube`, whose pods fetch the model from S3)."""

from __future__ import annotations

import pytest

from tests.fake_kube import LocalKubelet
from tests.servers import MLFLOW_ARTIFACT_BUCKET, mlflow_server
from tests.servers import S3_SECRET as SECRET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_server(s3_endpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(folder, s3_endpoint) as url:
        yield url, folder


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """The Kubernetes the deploy stage and deploy-champion connect to."""
    from recslm.serve import kube_target

    fake = LocalKubelet(tmp_path / "cluster")
    monkeypatch.setattr(kube_target, "connect", lambda: fake)
    yield fake
    fake.shutdown()


def test_smoke_pipeline_publishes_to_s3_and_a_fresh_worker_reuses_everything(s3_endpoint, tracking_server, prefect_harness, repo_root, tmp_path, cluster):
    import boto3
    from mlflow.tracking import MlflowClient

    from flows.compress import compress
    from flows.deploy_champion import DeployChampionParams, deploy_champion
    from recslm.config import load_config
    from recslm.serve.k8s import router_name, worker_name
    from recslm.serve.kube_target import ACTIVE_ANNOTATION
    from recslm.store.s3 import S3Store

    store_uri = "s3://artifacts/smoke-pipeline"
    mlflow_url, mlflow_folder = tracking_server
    first_root, second_root = tmp_path / "worker-a", tmp_path / "worker-b"
    production = [f"store.uri={store_uri}", f"tracking.uri={mlflow_url}", "serve.target=kubernetes", *_one_of_each_stage(repo_root)]
    cfg = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={first_root}", *production])
    first = compress(cfg, run_id="s3-first")
    assert not any(rec.cached for rec in first.stages.values())

    # the deploy stage rolled the release candidate out on the cluster: its pods fetched the
    # model from the S3 artifact, the version answered the offline scores directly and through
    # the router, which now selects it; the fleet keeps serving after the run
    deployed = _deploy_stage(first)
    release = deployed.metrics["deploy"]
    assert deployed.metrics["target"] == "kubernetes" and deployed.metrics["kept_running"] and release["previous"] is None
    final = next(m for m in first.models if m.name == f"{first.winner}-pruned")
    assert cluster.fetched == {"s3-first": f"{first.stages[_stage_of(first, final.key)].uri}/model"}
    assert release["smoke_direct"]["max_abs_diff"] < 1e-3 and release["smoke_routed"]["max_abs_diff"] < 1e-3
    assert deployed.metrics["fleet"]["version"] == "s3-first" and not deployed.metrics["fleet"]["degraded"] and deployed.metrics["bench"]["errors"] == 0
    router = cluster.objects[("Deployment", router_name(cfg.run.name))]
    assert router["metadata"]["annotations"][ACTIVE_ANNOTATION] == "s3-first" and cluster.routed_version() == "s3-first"
    keys = S3Store(store_uri, tmp_path / "inspect").object_keys()
    for name, rec in first.stages.items():
        stage = name.split(".")[0]
        assert rec.uri == f"{store_uri}/{stage}/{rec.key}"
        assert f"smoke-pipeline/{stage}/{rec.key}/stage.json" in keys, name
    assert any(k.endswith("/model/model.safetensors") for k in keys)
    # another machine: empty local cache and its own MLflow, same S3 store -> nothing recomputed
    other = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={second_root}", *production])
    second = compress(other, run_id="s3-second")
    assert all(rec.cached for name, rec in second.stages.items() if not name.startswith("deploy"))
    assert [m.auc_mean for m in second.models] == [m.auc_mean for m in first.models]
    # a deploy to a cluster is an action of its run: the second run rolled out its own version
    # blue/green, and the first one's objects are gone
    assert not _deploy_stage(second).cached and _deploy_stage(second).metrics["deploy"]["previous"] == "s3-first"
    assert set(cluster.pods) == {"s3-second"} and ("Deployment", worker_name(cfg.run.name, "s3-first")) not in cluster.objects

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

    # deploy-champion takes the same path: the registry's champion, fetched from its S3 artifact
    params = DeployChampionParams(config_file=str(repo_root / "configs" / "smoke.yaml"), overrides=[f"run.root={second_root}", *production, "bench.duration_s=1"])
    result = deploy_champion(params)
    version = f"{cfg.run.name}-v{champion.version}"
    assert result["deploy"]["version"] == version and result["deploy"]["previous"] == "s3-second" and result["deploy"]["smoke_routed"]["max_abs_diff"] < 1e-3
    assert set(cluster.pods) == {version} and cluster.routed_version() == version
    assert cluster.fetched[version] == f"{first.stages[_stage_of(first, champion.tags['recslm.key'])].uri}/model"

    # the S3 secret from the environment appears in no file either run wrote (logs, artifacts),
    # nor in the MLflow server's database or the artifacts it stored
    for root in (first_root, second_root, mlflow_folder):
        for path in root.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    for key in stored:
        assert SECRET.encode() not in boto3.client("s3").get_object(Bucket=MLFLOW_ARTIFACT_BUCKET, Key=key)["Body"].read(), key


def _one_of_each_stage(repo_root) -> list[str]:
    """The smoke config with every kind of stage once (the store, the tracking and the deploy are
    what this test is about; tests/pipeline runs the whole smoke config): one student without its
    SFT twin, a one-epoch teacher, one pruning step, two quantization schemes."""
    import json

    from recslm.config import load_config

    first_student = load_config(repo_root / "configs" / "smoke.yaml").students[0].model_dump(mode="json", exclude_none=True)
    return ["teacher.train.epochs=1", "distill.sft_baseline=false", f"students=[{json.dumps(first_student)}]",
            "prune.schedule=[{mlp_fraction: 0.5, heads_fraction: 0.5}]", "quantize.schemes=[fp8_dynamic, w4a16_gptq]"]  # fmt: skip


def _deploy_stage(summary):
    return next(record for name, record in summary.stages.items() if name.startswith("deploy"))


def _stage_of(summary, key: str) -> str:
    return next(name for name, record in summary.stages.items() if record.key == key)
