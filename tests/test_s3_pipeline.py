"""The smoke pipeline with its artifact store on an S3-compatible server (moto, localhost)."""

from __future__ import annotations

import pytest

from tests.test_s3store import SECRET, s3_endpoint  # noqa: F401 - the moto server fixture

pytestmark = pytest.mark.slow


def test_smoke_pipeline_publishes_to_s3_and_a_fresh_worker_reuses_everything(s3_endpoint, prefect_harness, repo_root, tmp_path):  # noqa: F811
    from flows.compress import compress
    from recslm.config import load_config
    from recslm.s3store import S3Store

    store_uri = "s3://artifacts/smoke-pipeline"
    first_root, second_root = tmp_path / "worker-a", tmp_path / "worker-b"
    cfg = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={first_root}", f"store.uri={store_uri}"])
    first = compress(cfg, run_id="s3-first")
    assert not any(rec.cached for rec in first.stages.values())
    keys = S3Store(store_uri, tmp_path / "inspect").object_keys()
    for name, rec in first.stages.items():
        stage = name.split(".")[0]
        assert rec.uri == f"{store_uri}/{stage}/{rec.key}"
        assert f"smoke-pipeline/{stage}/{rec.key}/stage.json" in keys, name
    assert any(k.endswith("/model/model.safetensors") for k in keys)
    # another machine: empty local cache and its own MLflow, same S3 store -> nothing recomputed
    other = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={second_root}", f"store.uri={store_uri}"])
    second = compress(other, run_id="s3-second")
    assert all(rec.cached for rec in second.stages.values())
    assert [m.auc_mean for m in second.models] == [m.auc_mean for m in first.models]
    # the S3 secret from the environment appears in no file either run wrote (logs, MLflow db, artifacts)
    for root in (first_root, second_root):
        for path in root.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
