"""The pipeline end to end on the smoke config: summary, store skipping, MLflow agreement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recslm.errors import ConfigError

pytestmark = pytest.mark.slow


def test_summary_json_follows_the_contract(smoke):
    path = smoke["root"] / "first" / "summary.json"
    summary = json.loads(path.read_text())
    assert set(summary) >= {"run_id", "config_hash", "wall_s", "stages", "models", "winner"}
    assert summary["run_id"] == "first" and summary["config_hash"] == smoke["cfg"].config_hash()
    students = ["tiny-llama", "small-qwen3", "tiny-llama-sft", "small-qwen3-sft"]
    pruned = f"{summary['winner']}-pruned"
    schemes = ["fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease"]
    assert set(summary["stages"]) == {"data", "baselines", "teacher", "evaluate", "teacher_logits", "select", "profile", "prune", f"evaluate.{pruned}"} | {
        f"{stage}.{name}" for stage in ("distill", "evaluate") for name in students
    } | {f"quantize.{s}" for s in schemes} | {f"evaluate.{pruned}-{s}" for s in schemes} | {"deploy"}
    for rec in summary["stages"].values():
        assert set(rec) >= {"key", "uri", "cached", "wall_s", "metrics"} and rec["cached"] is False
    teacher = summary["models"][0]
    assert teacher["role"] == "teacher" and teacher["params"] > 0 and teacher["bytes"] > 0
    by_name = {m["name"]: m for m in summary["models"][1:] if m["role"] not in ("baseline", "pruned", "quantized")}
    assert set(by_name) == set(students)
    assert [m["name"] for m in summary["models"] if m["role"] == "pruned"] == [pruned]
    for name, m in by_name.items():
        assert m["role"] == ("sft_baseline" if name.endswith("-sft") else "student")
        assert m["key"] == summary["stages"][f"distill.{name}"]["key"] and 0 < m["params"] < teacher["params"]
        assert m["auc_delta_pct"] == pytest.approx(100 * (m["auc_mean"] - teacher["auc_mean"]) / teacher["auc_mean"])
    # the SFT baseline has the student's architecture and budget, and never sees the teacher
    assert by_name["tiny-llama-sft"]["params"] == by_name["tiny-llama"]["params"]
    assert set(json.loads((Path(summary["stages"]["distill.tiny-llama-sft"]["uri"]) / "stage.json").read_text())["inputs"]) == {"data"}
    assert summary["stages"]["select"]["metrics"]["winner"] == summary["winner"]
    assert set(teacher["auc"]) == {"like", "love", "next"}
    assert teacher["auc_mean"] == pytest.approx(sum(teacher["auc"].values()) / 3)
    assert teacher["auc_delta_pct"] == 0.0
    assert teacher["key"] == summary["stages"]["teacher"]["key"]
    # every model also has its val AUC, and the counts without embeddings
    for m in summary["models"]:
        assert set(m["val_auc"]) == {"like", "love", "next"} and m["val_auc_mean"] == pytest.approx(sum(m["val_auc"].values()) / 3)
        assert m["val_auc_delta_pct"] == pytest.approx(100 * (m["val_auc_mean"] - teacher["val_auc_mean"]) / teacher["val_auc_mean"])
        if m["role"] != "baseline":
            assert 0 < m["params_non_embedding"] < m["params"]
    # the winner is chosen on val: the smallest student within the bar there
    within_val = [m for m in by_name.values() if m["role"] == "student" and m["val_auc_delta_pct"] >= -50]
    assert summary["winner"] == (min(within_val, key=lambda m: m["params"])["name"] if within_val else None)
    # the non-LM baselines, fitted on the same train records and scored on the same records
    baselines = {m["name"]: m for m in summary["models"] if m["role"] == "baseline"}
    assert list(baselines) == ["popularity", "item_mean", "logistic_regression", "gradient_boosting"]
    assert all(m["key"] == summary["stages"]["baselines"]["key"] and m["params_non_embedding"] is None for m in baselines.values())
    assert baselines["logistic_regression"]["val_auc_mean"] > 0.6
    gate = summary["teacher_gate"]
    assert gate["best_baseline"] in baselines and gate["passed"] == (
        teacher["val_auc_mean"] > max(m["val_auc_mean"] for m in summary["models"] if m["role"] in ("baseline", "sft_baseline"))
    )
    # the teacher's difference to every baseline on the same records, with a member-bootstrap interval
    vs = summary["stages"]["evaluate"]["metrics"]["vs_baselines"]
    assert set(vs) == set(baselines) and gate["vs_best_baseline"] == vs[gate["best_baseline"]]
    for split, model_auc in (("val", "val_auc_mean"), ("test", "auc_mean")):
        d = vs["logistic_regression"][split]
        assert d["difference"] == pytest.approx(teacher[model_auc] - baselines["logistic_regression"][model_auc], abs=1e-9)
        assert d["low"] <= d["difference"] <= d["high"] and d["draws"] > 900


def test_the_winner_is_profiled_pruned_on_schedule_and_redistilled(smoke):
    """smoke.yaml: MLP 25 %, then 50 %, then half the KV groups, each step re-distilled."""
    from transformers import AutoModelForCausalLM

    summary = json.loads((smoke["root"] / "first" / "summary.json").read_text())
    winner = next(m for m in summary["models"] if m["name"] == summary["winner"])
    pruned = next(m for m in summary["models"] if m["role"] == "pruned")
    assert pruned["params"] < winner["params"]
    profile = summary["stages"]["profile"]["metrics"]
    assert profile["context_lengths"] == [64, 256] and set(profile["recommendation"]) == {"heads", "mlp"}
    assert (Path(summary["stages"]["profile"]["uri"]) / "profile.png").stat().st_size > 0
    metrics = summary["stages"]["prune"]["metrics"]
    steps = metrics["steps"]
    assert [(s["mlp_keep"], s["kv_keep"]) for s in steps] == [(48, None), (32, None), (None, 1)]
    assert [s["config"]["intermediate_size"] for s in steps] == [48, 32, 32]
    assert [s["config"]["num_key_value_heads"] for s in steps] == [2, 2, 1]
    for step in steps:
        assert step["params_after"] < step["params_before"]
        assert set(step["pruned"]["auc"]) == set(step["redistilled"]["auc"]) == {"like", "love", "next"}
        assert step["auc_split"] == "val"  # test is scored once, by evaluate
        assert step["redistill_steps"] == 20 and set(step["prefill_ms"]) == {"64", "256"}
        for layer in step["records"]:
            assert layer["method"] == "osscar" and layer["error_local"] <= layer["error_greedy"] * (1 + 1e-9)
    assert metrics["params_after"] == pruned["params"] and set(metrics["prefill_ratio"]) == {"64", "256"}
    model = AutoModelForCausalLM.from_pretrained(Path(summary["stages"]["prune"]["uri"]) / "model")
    assert model.config.intermediate_size == 32 and model.config.num_key_value_heads == 1 and model.config.num_attention_heads == 2


def test_the_final_student_is_quantized_with_every_scheme(smoke):
    """smoke.yaml: the four schemes on the pruned winner, each evaluated, with the Table-7 report."""
    summary = json.loads((smoke["root"] / "first" / "summary.json").read_text())
    pruned = next(m for m in summary["models"] if m["role"] == "pruned")
    assert pruned["parent"] == summary["winner"]
    quantized = [m for m in summary["models"] if m["role"] == "quantized"]
    schemes = ["fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease"]
    assert [m["name"] for m in quantized] == [f"{pruned['name']}-{s}" for s in schemes]
    formats = {"fp8_dynamic": "float-quantized", "w8a8_int": "int-quantized", "w4a16_gptq": "pack-quantized", "w4a16_quantease": "pack-quantized"}
    for scheme, model in zip(schemes, quantized):
        stage = summary["stages"][f"quantize.{scheme}"]
        assert model["parent"] == pruned["name"] and model["key"] == stage["key"]
        assert model["params"] == pruned["params"]  # scales are not counted as weights
        assert model["auc_delta_vs_parent_pct"] == pytest.approx(100 * (model["auc_mean"] - pruned["auc_mean"]) / pruned["auc_mean"])
        config = json.loads((Path(stage["uri"]) / "model" / "config.json").read_text())
        assert config["quantization_config"]["format"] == formats[scheme]
        assert config["quantization_config"]["ignore"] == ["lm_head"]
        assert set(model["auc"]) == {"like", "love", "next"}
    w4 = {s: summary["stages"][f"quantize.{s}"]["metrics"] for s in ("w4a16_gptq", "w4a16_quantease")}
    assert w4["w4a16_gptq"]["bytes"] < w4["w4a16_gptq"]["bytes_before"]
    errors = w4["w4a16_quantease"]["layer_errors"]
    assert errors["quantease_mean_error"] < errors["gptq_mean_error"] < errors["rtn_mean_error"]
    table = (smoke["root"] / "first" / "quantization.md").read_text()
    assert all(f"| {s} |" in table for s in schemes) and f"none ({pruned['name']})" in table


def test_the_final_model_is_deployed_smoke_tested_benchmarked_and_stopped(smoke):
    """smoke.yaml: serve.enabled (local target) and bench.enabled, a short ranking load."""
    import httpx

    summary = json.loads((smoke["root"] / "first" / "summary.json").read_text())
    stage = summary["stages"]["deploy"]
    record, bench = stage["metrics"]["deploy"], stage["metrics"]["bench"]
    assert record["version"] == "first" and record["previous"] is None
    assert record["smoke_direct"]["max_abs_diff"] < 1e-3 and record["smoke_routed"]["scores"] > 0
    assert bench["errors"] == 0 and bench["members"] > 0 and 0 < bench["prefix_cache_hit_rate"] < 1
    assert bench["ttft_ms"]["all"]["p50"] > 0 and bench["throughput"]["members_per_s"] > 0
    assert (Path(stage["uri"]) / "bench.json").is_file()
    with pytest.raises(httpx.HTTPError):  # keep_running is off: the engine was stopped after the benchmark
        httpx.get(record["traffic_endpoint"] + "/health", timeout=2)
    assert summary["stages"]["deploy"]["key"] == smoke["second"].stages["deploy"].key and smoke["second"].stages["deploy"].cached


def test_the_fleet_target_deploys_behind_the_real_router_and_names_it_in_the_summary(smoke, prefect_harness):
    """`recslm run configs/smoke.yaml --set serve.target=fleet`: everything but deploy is reused;
    the deploy stage puts two workers behind SGLang's router, benchmarks through it, and the
    summary names the router, the workers and the bench."""
    import httpx

    pytest.importorskip("sglang_router")
    from flows.compress import compress

    cfg = smoke["cfg"].model_copy(deep=True)
    cfg.serve.target, cfg.serve.replicas = "fleet", 2
    summary = compress(cfg, run_id="fleet-run").model_dump(mode="json")
    assert all(rec["cached"] for name, rec in summary["stages"].items() if name != "deploy")
    metrics = summary["stages"]["deploy"]["metrics"]
    fleet, bench = metrics["fleet"], metrics["bench"]
    assert metrics["target"] == "fleet" and metrics["deploy"]["traffic_endpoint"] == fleet["router"]
    assert fleet["declared"] == 2 and fleet["healthy"] == 2 and not fleet["degraded"] and len(fleet["workers"]) == 2
    assert metrics["deploy"]["smoke_routed"]["via"] == "router" and metrics["deploy"]["smoke_direct"]["endpoints"] == 2
    assert bench["errors"] == 0 and bench["members"] > 0
    assert set(metrics["fleet_after_bench"]) >= {"router", "workers"}
    with pytest.raises(httpx.HTTPError):  # keep_running is off: router and workers were stopped
        httpx.get(fleet["router"] + "/workers", timeout=2)


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
    assert parent.data.metrics["teacher.val_auc_mean"] == pytest.approx(teacher["val_auc_mean"], abs=1e-12)
    assert parent.data.metrics["logistic_regression.val_auc_mean"] == pytest.approx(
        next(m["val_auc_mean"] for m in summary["models"] if m["name"] == "logistic_regression"), abs=1e-12
    )
    assert parent.data.params["teacher.train.learning_rate"] == "0.003"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_name = {run.info.run_name: run for run in children}
    students = [m for m in summary["models"] if m["role"] in ("student", "sft_baseline")]
    winner = summary["winner"]
    schemes = ["fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease"]
    assert set(by_name) == {"data", "baselines", "teacher", "evaluate-teacher", "teacher_logits", "select", f"profile-{winner}", f"prune-{winner}", f"evaluate-{winner}-pruned"} | {
        f"{stage}-{m['name']}" for stage in ("distill", "evaluate") for m in students
    } | {f"{stage}-{winner}-pruned-{s}" for stage in ("quantize", "evaluate") for s in schemes} | {f"deploy-{winner}-pruned"}
    # each quantize run has its variant's AUC and the per-layer errors over depth; the parent the table
    quantease_run = by_name[f"quantize-{winner}-pruned-w4a16_quantease"]
    assert "auc_mean" in quantease_run.data.metrics and "layer_errors.quantease_below_gptq" in quantease_run.data.metrics
    assert len(client.get_metric_history(quantease_run.info.run_id, "layer/quantease_error")) == len(
        summary["stages"]["quantize.w4a16_quantease"]["metrics"]["layers"]
    )
    assert "quantization.md" in {f.path for f in client.list_artifacts(parent.info.run_id)}
    deploy_run = by_name[f"deploy-{winner}-pruned"].data.metrics
    assert deploy_run["bench.ttft_ms.all.p50"] == pytest.approx(summary["stages"]["deploy"]["metrics"]["bench"]["ttft_ms"]["all"]["p50"])
    assert deploy_run["deploy.smoke_direct.max_abs_diff"] < 1e-3
    # the prune run has the per-step re-distillation curves and the pruned model's AUC
    prune_run = by_name[f"prune-{winner}"]
    assert "auc_mean" in prune_run.data.metrics and client.get_metric_history(prune_run.info.run_id, "train/step0_loss")
    assert by_name["evaluate-teacher"].data.metrics["auc_mean"] == pytest.approx(teacher["auc_mean"], abs=1e-12)
    curve = client.get_metric_history(by_name["teacher"].info.run_id, "train/loss")
    assert len(curve) >= 3 and curve[-1].step > curve[0].step
    # validation during training: val AUC and loss curves, and the kept checkpoint is the best on val
    val_curve = {m.step: m.value for m in client.get_metric_history(by_name["teacher"].info.run_id, "train/val_auc_mean")}
    assert len(val_curve) >= 2 and client.get_metric_history(by_name["teacher"].info.run_id, "train/val_loss")
    teacher_stage = summary["stages"]["teacher"]["metrics"]
    assert teacher_stage["best_step"] in val_curve and teacher_stage["best_val"] == pytest.approx(max(val_curve.values()))
    # one run per student holds its loss curves, AUC per task, delta and size
    for m in students:
        run = by_name[f"distill-{m['name']}"]
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 3
        assert len(client.get_metric_history(run.info.run_id, "train/val_auc_mean")) == 2  # steps 60 and 120
        assert run.data.metrics["auc_delta_pct"] == pytest.approx(m["auc_delta_pct"], abs=1e-9)
        assert run.data.metrics["auc.like"] == pytest.approx(m["auc"]["like"], abs=1e-12)
        assert run.data.metrics["params"] == m["params"]
        assert run.data.metrics["val_auc_mean"] == pytest.approx(m["val_auc_mean"], abs=1e-12)
    kd = by_name["distill-tiny-llama"]
    assert "train/loss_kd" in kd.data.metrics and "train/loss_prompt_kd" in kd.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "auc_delta.png"} <= artifacts
    # a local backend keeps artifacts under run.root, not in ./mlruns of the working directory
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.artifact_location == (smoke["root"] / "mlartifacts").resolve().as_uri()
    assert list((smoke["root"] / "mlartifacts").rglob("summary.json"))


def test_results_are_where_the_run_was_started_prefect_artifact_and_mlflow_description(smoke, prefect_harness):
    """The Prefect flow run carries the results table as an artifact; the MLflow experiment
    opens in its training view, the parent run's description is the same table, runs carry
    their source, and every stage run that read the data lists it as a dataset input."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    client = MlflowClient(tracking_uri=smoke["cfg"].tracking_uri())
    summary = json.loads((smoke["root"] / "first" / "summary.json").read_text())
    parent = client.get_run(summary["mlflow_run_id"])
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    description = parent.data.tags["mlflow.note.content"]
    assert "## Models" in description and f"**Winner (chosen on val):** `{summary['winner']}`" in description and "logistic_regression" in description
    assert parent.data.tags["mlflow.source.name"] == "flows/compress.py:compress" and len(parent.data.tags.get("mlflow.source.git.commit", "")) == 40
    data_key = summary["stages"]["data"]["key"]
    stage_runs = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    teacher = next(r for r in stage_runs if r.info.run_name == "teacher")
    (dataset,) = teacher.inputs.dataset_inputs
    assert dataset.dataset.digest == data_key[:32] and dataset.dataset.name == "movielens records"
    with get_client(sync_client=True) as prefect:
        flow_run_id = parent.data.tags["recslm.prefect.flow_run_id"]
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    (results,) = [a for a in artifacts if a.key == "recslm-results"]
    assert results.type == "markdown" and "## Stages" in results.data and summary["winner"] in results.data


def test_no_qualifying_student_stops_with_the_table_and_keeps_everything(smoke, prefect_harness):
    """A stricter bar re-runs only select; with no student within it the run stops with a table."""
    from flows.compress import compress
    from recslm.select import NoQualifyingStudentError

    cfg = smoke["cfg"].model_copy(deep=True)
    cfg.select.max_auc_drop_pct = -99.0  # a student would need twice the teacher's AUC
    assert smoke["first"].models[0].auc_mean > 0.51
    with pytest.raises(NoQualifyingStudentError) as err:
        compress(cfg, run_id="strict")
    for name in ("tiny-llama", "small-qwen3", "below bar", "select.max_auc_drop_pct=-99"):
        assert name in str(err.value)
    summary = json.loads((smoke["root"] / "strict" / "summary.json").read_text())
    assert summary["winner"] is None and not summary["stages"]["select"]["cached"]
    assert all(rec["cached"] for name, rec in summary["stages"].items() if name != "select")


def test_group_size_the_pruned_students_cannot_take_stops_before_any_work(smoke, prefect_harness):
    from flows.compress import compress
    from recslm.errors import ConfigError

    cfg = smoke["cfg"].model_copy(deep=True)
    cfg.quantize.group_size = 32
    with pytest.raises(ConfigError, match=r"tiny-llama o_proj \(16\)"):
        compress(cfg, run_id="ungroupable")
    assert not (smoke["root"] / "ungroupable").exists()


def test_a_rerun_over_a_bit_flipped_artifact_stops_naming_artifact_and_file(smoke, prefect_harness, tmp_path):
    """The store's manifests: a re-run that would reuse a changed file refuses it by name."""
    import shutil

    from flows.compress import compress
    from recslm.store.integrity import CorruptArtifactError

    shutil.copytree(smoke["root"] / "store", tmp_path / "store", ignore=shutil.ignore_patterns("_work", "_staging"))
    weights = next((tmp_path / "store" / "prune").glob("*/model/*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    cfg = smoke["cfg"].model_copy(deep=True)
    cfg.run.root = tmp_path
    with pytest.raises(CorruptArtifactError, match=rf"artifact prune/{weights.parent.parent.name[:12]} .*model/{weights.name} has sha256"):
        compress(cfg, run_id="flipped")


def test_cli_run_reuses_the_store_and_prints_the_summary(smoke, repo_root):
    """The real entry point, in a fresh process with its own ephemeral Prefect server."""
    env = {**os.environ, "RECSLM_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(repo_root / "configs" / "smoke.yaml"), "--set", f"run.root={smoke['root']}", "--run-id", "cli"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "AUC on test (reported) and val (decided on)" in proc.stdout and "logistic_regression" in proc.stdout and "teacher gate:" in proc.stdout and "teacher" in proc.stdout and "summary:" in proc.stdout
    assert f"registry: {smoke['first'].winner}-pruned is recslm-smoke v" in proc.stdout and "champion (already the champion)" in proc.stdout
    summary = json.loads((smoke["root"] / "cli" / "summary.json").read_text())
    assert all(rec["cached"] for rec in summary["stages"].values())
    assert summary["models"][0]["auc"] == pytest.approx(smoke["first"].models[0].auc)


def test_the_release_candidate_is_registered_as_champion_and_deploy_champion_serves_it(smoke, prefect_harness, repo_root):
    from flows.deploy_champion import DeployChampionParams, deploy_champion

    first, second = smoke["first"], smoke["second"]
    release = f"{first.winner}-pruned"
    assert first.registry["candidate"] == release and first.registry["promotion"]["verdict"] == "champion"
    assert second.registry["new_versions"] == [] and second.registry["promotion"]["reason"] == "already the champion"
    client = MlflowClient(tracking_uri=smoke["cfg"].tracking_uri())
    versions = {v.tags["recslm.name"]: v for v in client.search_model_versions("name = 'recslm-smoke'")}
    assert set(versions) == {m.name for m in first.models if m.role in ("student", "pruned", "quantized")}
    champion = client.get_model_version_by_alias("recslm-smoke", "champion")
    assert champion.tags["recslm.name"] == release and champion.tags["recslm.parent"] == first.winner
    assert versions[f"{release}-w4a16_gptq"].tags["recslm.parent_key"] == champion.tags["recslm.key"]

    # a different bench config: a real deploy (not the run's cached one) of what the registry names
    params = DeployChampionParams(config_file=str(repo_root / "configs" / "smoke.yaml"), overrides=[f"run.root={smoke['root']}", "bench.duration_s=1"])
    result = deploy_champion(params)
    assert result["version"] == str(champion.version) and result["alias"] == "champion"
    assert result["deploy"]["smoke_routed"]["max_abs_diff"] < 1e-3 and result["bench"]["errors"] == 0
    assert client.get_model_version("recslm-smoke", champion.version).tags["recslm.deployed"] == result["deploy"]["traffic_endpoint"]

    missing = params.model_copy(update={"alias": "canary"})
    with pytest.raises(ConfigError, match="alias 'canary'"):
        deploy_champion(missing)


def test_students_distil_from_a_served_teachers_topk_without_loading_the_teacher(smoke, repo_root, tmp_path):
    """distill.teacher_logits: served: the smoke run's teacher behind `recslm serve`, asked for
    its top-k with SGLang's fields; the students train on those targets (which equal the
    in-process ones to float16 rounding) and land where the in-process top-k students did."""
    from flows.compress import compress
    from recslm.config import load_config
    from recslm.serve.deploy import spawn_engine, terminate, wait_engine
    from recslm.serve.server import free_port

    first = smoke["first"]
    port = free_port()
    pid = spawn_engine(str(Path(first.stages["teacher"].uri) / "model"), port, tmp_path / "teacher.log", threads=1)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_engine(url, pid, tmp_path / "teacher.log", 120, "the teacher server")
        off = ["prune.enabled=false", "quantize.enabled=false", "serve.enabled=false", "bench.enabled=false", "registry.enabled=false", "distill.sft_baseline=false"]
        cfg = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={smoke['root']}", "distill.teacher_logits=served", f"distill.teacher_url={url}", *off])
        cfg.students = cfg.students[:1]  # tiny-llama: one student shows it
        served = compress(cfg, run_id="served-teacher")
    finally:
        terminate(pid)
    topk = served.stages["teacher_logits"]
    assert not topk.cached and topk.metrics["served_by"] == url and topk.metrics["groups"] == first.stages["teacher_logits"].metrics["groups"]
    assert served.stages["teacher"].cached and served.stages["teacher"].key == first.stages["teacher"].key
    for name in ("tiny-llama",):
        record = served.stages[f"distill.{name}"]
        assert not record.cached and record.metrics["teacher_logits"] == "served"
        a, b = (next(m.auc_mean for m in run.models if m.name == name) for run in (first, served))
        assert abs(a - b) < 0.02, (name, a, b)
