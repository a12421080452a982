"""The register stage against real MLflow: lineage tags, the champion alias, and concurrent runs.

The concurrency test starts a real ``mlflow server`` (SQLite backend, artifacts on an
S3-compatible server) and six processes that each register one run's candidate at the same
moment, through the Prefect API's global concurrency limit used as the registry lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recslm.config import PipelineConfig
from recslm.summary import ModelRecord, RunSummary, StageRecord
from tasks.tracking import TrackingHandle
from tests.servers import mlflow_server

REPO = Path(__file__).resolve().parents[2]
TEACHER_KEY = "t" * 64


def _key(name: str) -> str:
    return (name.encode().hex() * 64)[:64]


def _model(name: str, role: str, size: int, auc: float = 0.75, delta: float = -0.5, parent: str | None = None) -> ModelRecord:
    return ModelRecord(name=name, role=role, params=size // 4, bytes=size, auc={"like": auc + 0.01, "love": auc - 0.01}, auc_mean=auc,
                       auc_delta_pct=delta, key=_key(name), parent=parent)  # fmt: skip


def _summary(run_id: str, *models: ModelRecord) -> RunSummary:
    teacher = ModelRecord(name="teacher", role="teacher", params=10**6, bytes=4 * 10**6, auc={"like": 0.76, "love": 0.74}, auc_mean=0.75,
                          auc_delta_pct=0.0, key=TEACHER_KEY)  # fmt: skip
    stages = {"teacher": StageRecord(key=TEACHER_KEY, uri=f"s3://artifacts/team/teacher/{TEACHER_KEY}", cached=False, wall_s=1.0)}
    for m in models:
        stages[f"stage.{m.name}"] = StageRecord(key=m.key, uri=f"s3://artifacts/team/{m.role}/{m.key}", cached=False, wall_s=1.0)
    return RunSummary(run_id=run_id, config_hash="c" * 64, wall_s=1.0, stages=stages, models=[teacher, *models], recslm_version="test")


def _config(root: Path, name: str = "ranker") -> PipelineConfig:
    return PipelineConfig.model_validate({"run": {"name": name, "root": str(root)}, "select": {"max_auc_drop_pct": 1.0}})


@pytest.fixture
def sqlite_tracking(tmp_path) -> TrackingHandle:
    return TrackingHandle(enabled=True, uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_runs_register_their_candidates_with_lineage_and_the_alias_follows_the_policy(prefect_harness, sqlite_tracking, tmp_path):
    from tasks.register import register_models

    config = _config(tmp_path)
    client = MlflowClient(sqlite_tracking.uri)
    student, fp8 = _model("s", "student", 4000), _model("s-fp8", "quantized", 2000, parent="s")
    first = register_models(config, sqlite_tracking, _summary("run-1", student, fp8), "s-fp8")
    assert first.new_versions == ["1", "2"] and first.versions == {"s": "1", "s-fp8": "2"}
    assert first.promotion.verdict == "champion" and first.previous_champion is None
    assert str(client.get_model_version_by_alias("ranker", "champion").version) == "2"
    tags = client.get_model_version("ranker", "2").tags
    assert tags["recslm.parent"] == "s" and tags["recslm.parent_key"] == student.key and tags["recslm.teacher_key"] == TEACHER_KEY
    assert tags["recslm.run_id"] == "run-1" and tags["recslm.config_hash"] == "c" * 64 and tags["recslm.key"] == fp8.key
    assert tags["bytes"] == "2000" and float(tags["auc.like"]) == pytest.approx(0.76) and tags["recslm.verdict"] == "champion"
    assert client.get_model_version("ranker", "2").source == f"s3://artifacts/team/quantized/{fp8.key}/model"

    # the same run again: nothing new, the champion stays
    again = register_models(config, sqlite_tracking, _summary("run-1b", student, fp8), "s-fp8")
    assert again.new_versions == [] and again.versions == first.versions and again.promotion.verdict == "champion"

    # bigger at equal quality: a challenger; the champion alias does not move
    bigger = register_models(config, sqlite_tracking, _summary("run-2", _model("big", "student", 9000)), "big")
    assert bigger.promotion.verdict == "challenger" and bigger.previous_champion == "2"
    assert str(client.get_model_version_by_alias("ranker", "challenger").version) == bigger.candidate_version
    assert str(client.get_model_version_by_alias("ranker", "champion").version) == "2"

    # smaller but below the quality bar: a challenger too
    weak = register_models(config, sqlite_tracking, _summary("run-3", _model("weak", "student", 100, delta=-3.0)), "weak")
    assert weak.promotion.verdict == "challenger" and "quality bar" in weak.promotion.reason

    # smaller at equal quality: the new champion
    better = register_models(config, sqlite_tracking, _summary("run-4", _model("small", "pruned", 1500, auc=0.7495)), "small")
    assert better.promotion.verdict == "champion" and better.previous_champion == "2"
    assert str(client.get_model_version_by_alias("ranker", "champion").version) == better.candidate_version
    assert len(client.search_model_versions("name = 'ranker'")) == 5

    # a team switching the objective to AUC: the bigger, better model is re-proposed and wins;
    # under it the small one is a challenger; back on size, the challenger is promoted and loses that alias
    by_auc = config.model_copy(update={"registry": config.registry.model_copy(update={"objective": "auc_mean"})})
    big_again = register_models(by_auc, sqlite_tracking, _summary("run-5", _model("big", "student", 9000)), "big")
    assert big_again.new_versions == [] and big_again.promotion.verdict == "champion"
    small_again = register_models(by_auc, sqlite_tracking, _summary("run-6", _model("small", "pruned", 1500, auc=0.7495)), "small")
    assert small_again.promotion.verdict == "challenger"
    assert client.get_registered_model("ranker").aliases == {"champion": int(big_again.candidate_version), "challenger": int(small_again.candidate_version)}
    promoted = register_models(config, sqlite_tracking, _summary("run-7", _model("small", "pruned", 1500, auc=0.7495)), "small")
    assert promoted.promotion.verdict == "champion"
    assert client.get_registered_model("ranker").aliases == {"champion": int(promoted.candidate_version)}


def test_a_release_candidate_that_is_not_a_model_of_the_run_is_refused(prefect_harness, sqlite_tracking, tmp_path):
    from recslm.errors import ConfigError
    from tasks.register import register_models

    with pytest.raises(ConfigError, match="'nope' is not among"):
        register_models(_config(tmp_path), sqlite_tracking, _summary("run-1", _model("s", "student", 4000)), "nope")


@pytest.fixture(scope="module")
def tracking_server(s3_endpoint, tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), s3_endpoint) as url:
        yield url


@pytest.mark.timeout(600)
def test_concurrent_runs_never_lose_a_version_or_race_the_champion_alias(prefect_harness, tracking_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    sizes = [5000, 3000, 4000, 1000, 2000, 6000]  # 1000 is below the quality bar: the champion must be 2000
    specs = []
    for i, size in enumerate(sizes):
        model = _model(f"cand-{i}", "student", size, delta=-3.0 if size == 1000 else -0.5)
        spec = {"config": _config(tmp_path, "concurrent").model_dump(mode="json"), "tracking": {"enabled": True, "uri": tracking_server},
                "summary": _summary(f"run-{i}", model).model_dump(mode="json"), "candidate": model.name}  # fmt: skip
        (tmp_path / f"spec-{i}.json").write_text(json.dumps(spec))
        specs.append(model)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.registry_worker", str(tmp_path / f"spec-{i}.json"), str(tmp_path / f"out-{i}.json"),
                          str(tmp_path / f"ready-{i}"), str(go)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for i in range(len(sizes))
    ]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{i}").exists() for i in range(len(sizes))):
        assert all(p.poll() is None for p in procs), [p.stderr.read()[-2000:] for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    go.touch()  # all at once
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    results = [json.loads((tmp_path / f"out-{i}.json").read_text()) for i in range(len(sizes))]

    client = MlflowClient(tracking_server)
    versions = client.search_model_versions("name = 'concurrent'")
    assert sorted(int(v.version) for v in versions) == list(range(1, len(sizes) + 1)), "a version was lost or duplicated"
    assert sorted(r["candidate_version"] for r in results) == sorted(str(v.version) for v in versions)
    champion = client.get_model_version_by_alias("concurrent", "champion")
    assert champion.tags["bytes"] == "2000", "the smallest candidate within the bar must end as champion"
    # serial decisions: each promotion saw the champion the previous promotion left (no lost update)
    promoted = [r for r in results if r["promotion"]["verdict"] == "champion"]
    previous = [r["previous_champion"] for r in promoted]
    assert len(set(previous)) == len(previous), f"two runs promoted over the same champion: {previous}"
    chain = {r["previous_champion"]: r["candidate_version"] for r in promoted}
    walk, seen = None, []
    while walk in chain:
        walk = chain[walk]
        seen.append(walk)
    assert len(seen) == len(promoted) and walk == str(champion.version)
    for r in results:  # a challenger either lost to the champion it saw or missed the bar
        if r["promotion"]["verdict"] == "challenger":
            assert r["previous_champion"] is not None or "quality bar" in r["promotion"]["reason"], r


def test_the_promotion_policy_reads_val_auc_from_the_tags():
    """A version's tags carry test and val AUC; the policy sees val (test is reported, not decided on).
    A version registered before val existed (recslm 0.1) falls back to its test AUC."""
    from types import SimpleNamespace

    from tasks.register import entry, lineage_tags

    model = _model("student", "student", 4000, auc=0.70, delta=-6.0).model_copy(update={"val_auc": {"like": 0.8}, "val_auc_mean": 0.8, "val_auc_delta_pct": -0.5})
    tags = lineage_tags(_summary("r1", model), model, "s3://artifacts/team/student/k")
    assert tags["auc_mean"] == "0.7" and tags["val_auc_mean"] == "0.8" and tags["val_auc.like"] == "0.8"
    seen = entry(SimpleNamespace(version="3", tags=tags))
    assert seen.auc_mean == 0.8 and seen.auc_delta_pct == -0.5
    old = {k: v for k, v in tags.items() if not k.startswith("val_")}
    assert entry(SimpleNamespace(version="1", tags=old)).auc_mean == 0.7
