"""The pipeline end to end on the smoke config: summary, store skipping, MLflow agreement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recslm.errors import StageNotAvailableError

pytestmark = pytest.mark.slow


def test_summary_json_follows_the_contract(smoke):
    path = smoke["root"] / "first" / "summary.json"
    summary = json.loads(path.read_text())
    assert set(summary) >= {"run_id", "config_hash", "wall_s", "stages", "models", "winner"}
    assert summary["run_id"] == "first" and summary["config_hash"] == smoke["cfg"].config_hash()
    assert set(summary["stages"]) == {"data", "teacher", "evaluate"}
    for rec in summary["stages"].values():
        assert set(rec) >= {"key", "uri", "cached", "wall_s", "metrics"} and rec["cached"] is False
    (teacher,) = summary["models"]
    assert teacher["role"] == "teacher" and teacher["params"] > 0 and teacher["bytes"] > 0
    assert set(teacher["auc"]) == {"like", "love", "next"}
    assert teacher["auc_mean"] == pytest.approx(sum(teacher["auc"].values()) / 3)
    assert teacher["auc_delta_pct"] == 0.0
    assert teacher["key"] == summary["stages"]["teacher"]["key"]


def test_teacher_artifact_is_a_plain_hugging_face_directory(smoke):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(smoke["first"].stages["teacher"].uri) / "model"
    assert list(model_dir.glob("*.safetensors")) and not list(model_dir.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.model_type == "mixtral" and len(tokenizer.encode(" yes")) == 1
    stage = json.loads((model_dir.parent / "stage.json").read_text())
    assert stage["inputs"] == {"data": smoke["first"].stages["data"].key}


def test_rerun_skips_finished_stages(smoke):
    first, second = smoke["first"], smoke["second"]
    assert all(rec.cached for rec in second.stages.values())
    assert {k: r.key for k, r in first.stages.items()} == {k: r.key for k, r in second.stages.items()}
    assert second.models[0].auc == first.models[0].auc
    assert smoke["second_s"] < 0.2 * smoke["first_s"], (smoke["first_s"], smoke["second_s"])


def test_mlflow_holds_the_same_teacher_auc(smoke):
    client = MlflowClient(tracking_uri=smoke["cfg"].tracking_uri())
    summary = json.loads((smoke["root"] / "first" / "summary.json").read_text())
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("recslm-smoke").experiment_id], "tags.`recslm.run_id` = 'first'"
    )
    assert parent.info.run_id == summary["mlflow_run_id"] and parent.info.status == "FINISHED"
    teacher = summary["models"][0]
    for task, auc in teacher["auc"].items():
        assert parent.data.metrics[f"teacher.auc.{task}"] == pytest.approx(auc, abs=1e-12)
    assert parent.data.metrics["teacher.auc_mean"] == pytest.approx(teacher["auc_mean"], abs=1e-12)
    assert parent.data.params["teacher.train.learning_rate"] == "0.003"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_name = {run.info.run_name: run for run in children}
    assert set(by_name) == {"data", "teacher", "evaluate-teacher"}
    assert by_name["evaluate-teacher"].data.metrics["auc_mean"] == pytest.approx(teacher["auc_mean"], abs=1e-12)
    curve = client.get_metric_history(by_name["teacher"].info.run_id, "train/loss")
    assert len(curve) >= 3 and curve[-1].step > curve[0].step


def test_changing_one_stage_reruns_only_what_depends_on_it(smoke, prefect_harness):
    from flows.compress import compress

    cfg = smoke["cfg"].model_copy(deep=True)
    cfg.evaluate.prefix_sharing = False
    summary = compress(cfg, run_id="naive-eval")
    assert summary.stages["data"].cached and summary.stages["teacher"].cached
    assert not summary.stages["evaluate"].cached
    # naive scoring of the same model gives the same AUC as prefix-shared scoring
    for task, auc in smoke["first"].models[0].auc.items():
        assert summary.models[0].auc[task] == pytest.approx(auc, abs=1e-4)


def test_stage_this_version_cannot_run_stops_before_any_work(smoke, prefect_harness):
    from flows.compress import compress

    cfg = smoke["cfg"].model_copy(deep=True)
    cfg.prune.enabled = True
    with pytest.raises(StageNotAvailableError, match="prune.enabled"):
        compress(cfg, run_id="pruned")
    assert not (smoke["root"] / "pruned").exists()


def test_cli_run_reuses_the_store_and_prints_the_summary(smoke, repo_root):
    """The real entry point, in a fresh process with its own ephemeral Prefect server."""
    env = {**os.environ, "RECSLM_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "recslm.cli", "run", str(repo_root / "configs" / "smoke.yaml"), "--set", f"run.root={smoke['root']}", "--run-id", "cli"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "models (test AUC)" in proc.stdout and "teacher" in proc.stdout and "summary:" in proc.stdout
    summary = json.loads((smoke["root"] / "cli" / "summary.json").read_text())
    assert all(rec["cached"] for rec in summary["stages"].values())
    assert summary["models"][0]["auc"] == pytest.approx(smoke["first"].models[0].auc)
