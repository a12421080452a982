"""The generative task end to end through the same flow: configs/smoke-generative.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generative(tmp_path_factory, prefect_harness, repo_root):
    """The generative smoke run twice with one config: the second must reuse everything."""
    from flows.compress import compress
    from recslm.config import load_config

    root = tmp_path_factory.mktemp("gen-runs")
    cfg = load_config(repo_root / "configs" / "smoke-generative.yaml", [f"run.root={root}"])
    first = compress(cfg, run_id="first")
    second = compress(cfg, run_id="second")
    return {"cfg": cfg, "root": root, "first": first, "second": second}


def test_every_model_has_val_and_test_loss_the_task_metric_and_the_kl_to_the_teacher(generative):
    summary = json.loads((generative["root"] / "first" / "summary.json").read_text())
    students = ["tiny-llama", "small-qwen3", "tiny-llama-sft", "small-qwen3-sft"]
    pruned = f"{summary['winner']}-pruned"
    schemes = ["fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease"]
    assert set(summary["stages"]) == {"data", "baselines", "teacher", "evaluate", "select", "profile", "prune", f"evaluate.{pruned}", "deploy"} | {
        f"{s}.{n}" for s in ("distill", "evaluate") for n in students} | {f"quantize.{s}" for s in schemes} | {f"evaluate.{pruned}-{s}" for s in schemes}
    models = {m["name"]: m for m in summary["models"]}
    # SFT baselines train first, then the gate, then KD; the winner is pruned, the pruned model quantized
    assert list(models) == ["teacher", *students[2:], *students[:2], pruned, *(f"{pruned}-{s}" for s in schemes)]
    teacher = models["teacher"]
    for m in models.values():
        assert m["task"] == "generative" and m["auc"] == {} and m["auc_mean"] is None
        assert m["loss"] > 0 and m["val_loss"] > 0 and 0 < m["params_non_embedding"] < m["params"]
        assert 0.0 <= m["sentiment"] <= 1.0 and 0.0 <= m["val_sentiment"] <= 1.0
        assert m["val_loss_increase_pct"] == pytest.approx(100 * (m["val_loss"] - teacher["val_loss"]) / teacher["val_loss"])
        if m["role"] != "teacher":
            assert m["divergence"] > 0 and m["val_divergence"] > 0  # the KL to the teacher, for every student
    # KD and SFT side by side: same architecture and budget, the SFT baseline never sees the teacher
    assert models["tiny-llama-sft"]["params"] == models["tiny-llama"]["params"]
    assert set(json.loads((Path(summary["stages"]["distill.tiny-llama-sft"]["uri"]) / "stage.json").read_text())["inputs"]) == {"data"}
    # the data stage split by product: no product in two splits
    data = summary["stages"]["data"]["metrics"]
    assert data["task"] == "generative" and all(data["splits"][s]["records"] > 0 for s in ("train", "val", "test"))
    # on-policy phase: the student wrote half of each batch, and its cost is reported
    phases = summary["stages"]["distill.small-qwen3"]["metrics"]["phases"]
    assert [p["on_policy_fraction"] for p in phases] == [0.0, 0.5]
    assert phases[1]["generated_examples"] == 4 * phases[1]["steps"] and phases[1]["sampling_s"] > 0
    assert 0 < summary["stages"]["distill.small-qwen3"]["metrics"]["sampling_share"] < 1
    # the generated texts are kept beside the metrics
    samples = json.loads((Path(summary["stages"]["evaluate.tiny-llama"]["uri"]) / "samples.json").read_text())
    assert set(samples) == {"val", "test"} and all(s["written"] is not None and s["prompt"].endswith("Review:") for s in samples["test"])


def test_the_winner_is_pruned_quantized_and_each_variant_judged_on_val_loss(generative):
    summary = json.loads((generative["root"] / "first" / "summary.json").read_text())
    models = {m["name"]: m for m in summary["models"]}
    winner, pruned = models[summary["winner"]], models[f"{summary['winner']}-pruned"]
    assert pruned["role"] == "pruned" and pruned["parent"] == winner["name"] and pruned["params"] < winner["params"]
    assert pruned["val_loss_increase_vs_parent_pct"] == pytest.approx(100 * (pruned["val_loss"] - winner["val_loss"]) / winner["val_loss"])
    step = summary["stages"]["prune"]["metrics"]["steps"][0]
    assert step["pruned"]["val_loss"] > 0 and step["redistilled"]["val_loss"] > 0 and step["redistill_steps"] == 20
    assert step["redistilled"]["val_loss"] < step["pruned"]["val_loss"]  # re-distillation on responses recovers part of the loss
    for scheme in ("fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease"):
        variant = models[f"{pruned['name']}-{scheme}"]
        assert variant["role"] == "quantized" and variant["parent"] == pruned["name"] and variant["val_loss"] > 0 and variant["divergence"] > 0
    table = (generative["root"] / "first" / "quantization.md").read_text()
    assert "val loss" in table and "w4a16_quantease" in table


def test_the_final_model_is_deployed_checked_by_greedy_generation_and_benchmarked_with_tpot(generative):
    summary = json.loads((generative["root"] / "first" / "summary.json").read_text())
    deploy = summary["stages"]["deploy"]["metrics"]
    smoke = deploy["deploy"]["smoke_routed"]
    assert smoke["tokens"] > 0 and smoke["max_abs_diff"] <= 1e-3  # what the server wrote is the model's greedy choice
    bench = deploy["bench"]
    assert bench["errors"] == 0 and bench["members"] > 0 and bench["tpot_ms"] > 0 and bench["ttft_ms"]["all"]["p50"] > 0
    assert bench["throughput"]["output_tokens_per_s"] > 0 and deploy["kept_running"] is False


def test_the_release_candidate_is_registered_and_promoted_on_val_loss(generative):
    registry = json.loads((generative["root"] / "first" / "summary.json").read_text())["registry"]
    assert registry["candidate"].endswith("-pruned") and registry["promotion"]["verdict"] == "champion"
    client = MlflowClient(tracking_uri=generative["cfg"].tracking_uri())
    version = client.get_model_version(registry["model_name"], registry["candidate_version"])
    assert version.tags["recslm.task"] == "generative" and float(version.tags["val_loss"]) > 0
    second = generative["second"].registry
    assert second["candidate_version"] == registry["candidate_version"] and second["promotion"]["reason"] == "already the champion"


def test_the_winner_is_the_smallest_student_within_the_val_loss_bar(generative):
    summary = json.loads((generative["root"] / "first" / "summary.json").read_text())
    bar = generative["cfg"].select.max_val_loss_increase_pct
    within = [m for m in summary["models"] if m["role"] == "student" and m["val_loss_increase_pct"] <= bar]
    assert summary["winner"] == (min(within, key=lambda m: (m["params"], m["val_loss"]))["name"] if within else None)
    selection = summary["stages"]["select"]["metrics"]
    assert selection["metric"] == "val_loss" and selection["winner"] == summary["winner"]
    gate = summary["teacher_gate"]
    best_sft = min((m for m in summary["models"] if m["role"] == "sft_baseline"), key=lambda m: m["val_loss"])
    assert gate["metric"] == "val_loss" and gate["best_sft"] == best_sft["name"]
    assert gate["passed"] == (summary["models"][0]["val_loss"] < best_sft["val_loss"])


def test_selection_reads_val_not_test(generative, tmp_path):
    """Swap a student's val and test losses in the select stage's inputs: the verdict follows val."""
    from recslm.select import LossCandidate, select_smallest_by_loss

    summary = json.loads((generative["root"] / "first" / "summary.json").read_text())
    students = [m for m in summary["models"] if m["role"] == "student"]
    by_val = select_smallest_by_loss([LossCandidate(name=m["name"], params=m["params"], val_loss=m["val_loss"]) for m in students],
                                     summary["models"][0]["val_loss"], generative["cfg"].select.max_val_loss_increase_pct)  # fmt: skip
    assert by_val.winner == summary["winner"]


def test_mlflow_holds_val_loss_curves_for_teacher_and_students(generative):
    cfg = generative["cfg"]
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    experiment = client.get_experiment_by_name(cfg.run.name)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=200)}
    for name in ("teacher", "distill-tiny-llama", "distill-small-qwen3-sft"):
        history = client.get_metric_history(runs[name].info.run_id, "train/val_loss")
        assert len(history) >= 2 and all(h.value > 0 for h in history), name
    parent = runs["first"]
    assert parent.data.metrics["tiny-llama.val_loss"] == pytest.approx(next(m.val_loss for m in generative["first"].models if m.name == "tiny-llama"))


def test_a_second_run_is_served_from_the_store(generative):
    assert all(rec.cached for rec in generative["second"].stages.values()), [n for n, r in generative["second"].stages.items() if not r.cached]
    assert [m.model_dump() for m in generative["second"].models] == [m.model_dump() for m in generative["first"].models]
