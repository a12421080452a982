"""``recslm reproduce --quick``: every row on tiny settings, through the pipeline's own flow."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

RANKING_ROWS = {"kd_vs_sft", "scarce_labels", "loss_choice", "prune_ratio", "size", "redistill_loss", "gradual", "calibration", "quantization", "kv_prune", "serving"}
GENERATIVE_ROWS = {"gen_kd_vs_sft", "gen_losses", "gen_schedules", "gen_sampling", "gen_teacher_size"}
VERDICTS = {"holds", "does not hold", "no signal at this scale"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory, prefect_harness, repo_root):
    from flows.reproduce import reproduce
    from recslm.reproduce.study_config import load_study

    root = tmp_path_factory.mktemp("reproduce")
    study = load_study(repo_root / "configs" / "reproduce.yaml")
    generative = study.generative.model_copy(update={"quick": [*study.generative.quick, f"run.root={root}"]})
    study = study.model_copy(update={"quick": [*study.quick, f"run.root={root}"], "generative": generative})
    first = reproduce(study, quick=True, study_id="quick", name="reproduce")
    # again, the rows that read the KD arm and the most pruned arm: all of it must come from the store
    second = reproduce(study.model_copy(update={"rows": ["kd_vs_sft", "size"]}), quick=True, study_id="again", name="reproduce")
    return {"root": root, "first": first, "second": second}


def test_every_row_carries_an_effect_an_interval_and_a_verdict(quick):
    out = quick["root"] / "reproduce" / "quick"
    report = json.loads((out / "reproduce.json").read_text())
    assert report["header"]["quick"] is True and report["header"]["seeds"] == [0, 1]
    assert {f["row"] for f in report["findings"]} == RANKING_ROWS | GENERATIVE_ROWS
    assert {f["metric"] for f in report["findings"] if f["row"] in GENERATIVE_ROWS} == {"test loss"}
    for f in report["findings"]:
        low, high = f["ci95"]
        assert f["claim"] and f["paper"] and low <= f["effect"] <= high and f["verdict"] in VERDICTS
        assert f["n_seeds"] == 2 and all(len(v) == 2 for v in f["per_seed"].values())
        # the effect is the mean paired difference of the arms' own values
        a, b = f["per_seed"][f["a"]], f["per_seed"][f["b"]]
        assert f["effect"] == pytest.approx(sum(y - x for x, y in zip(a, b)) / 2)
    assert (out / "reproduce.png").stat().st_size > 0
    table = (out / "reproduce.md").read_text()
    assert "| row | claim |" in table and "95 % interval" in table


def test_arms_share_the_teacher_and_pair_the_seeds(quick):
    runs = sorted(p.name for p in quick["root"].iterdir() if p.name.startswith("quick-") and not p.name.startswith("quick-gen-"))
    assert len(runs) == 28  # 14 arms x 2 seeds (the one-shot pruning rides on the KD arm)
    teachers = {json.loads((quick["root"] / r / "summary.json").read_text())["stages"]["teacher"]["key"] for r in runs}
    assert len(teachers) == 1  # one teacher for every arm and seed
    kd = json.loads((quick["root"] / "quick-kd-s0" / "summary.json").read_text())
    rkl = json.loads((quick["root"] / "quick-rkl-s0" / "summary.json").read_text())
    assert kd["stages"]["data"]["key"] == rkl["stages"]["data"]["key"]


def test_a_second_reproduction_is_served_from_the_store(quick):
    again = {(f["row"], f["b"]): f for f in quick["second"]["findings"]}
    first = {(f["row"], f["b"]): f for f in quick["first"]["findings"]}
    assert set(again) == {key for key in first if key[0] in ("kd_vs_sft", "size")} and all(again[k] == first[k] for k in again)
    runs = {p.name: json.loads((p / "summary.json").read_text()) for p in quick["root"].iterdir() if p.name.startswith("again-")}
    assert len(runs) == 2 and all(s["cached"] for summary in runs.values() for s in summary["stages"].values())


def test_the_report_is_in_mlflow(quick):
    client = MlflowClient(tracking_uri=f"sqlite:///{(quick['root'] / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("recslm-smoke-reproduce")
    run = next(r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "quick")
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"reproduce.md", "reproduce.json", "reproduce.png"}
    assert any(k.endswith(".effect") for k in run.data.metrics)


def test_generative_arms_share_their_teacher_and_vary_what_their_row_names(quick):
    root = quick["root"]
    summaries = {p.name: json.loads((p / "summary.json").read_text()) for p in root.iterdir() if p.name.startswith("quick-gen-")}
    assert len(summaries) == 20  # 10 arms x 2 seeds
    teachers = {name: s["stages"]["teacher"]["key"] for name, s in summaries.items()}
    assert len({k for n, k in teachers.items() if "teacher-tiny" not in n}) == 1  # the base teacher, trained once
    assert len(set(teachers.values())) == 2  # and the other size
    recipe, ofkl = summaries["quick-gen-recipe-s0"], summaries["quick-gen-ofkl-s0"]
    assert all(m["task"] == "generative" for s in summaries.values() for m in s["models"])
    # the on-policy arms sampled (a share of their wall time), the off-policy one did not
    assert recipe["stages"]["distill.llama-96x2"]["metrics"]["sampling_share"] > 0 < ofkl["stages"]["distill.llama-96x2"]["metrics"]["sampling_share"]
    assert summaries["quick-gen-fkl-s0"]["stages"]["distill.llama-96x2"]["metrics"]["sampling_share"] == 0
    # paired seeds: the seed changes the student, not the data or the teacher
    s0, s1 = summaries["quick-gen-rkl-s0"], summaries["quick-gen-rkl-s1"]
    assert s0["stages"]["data"]["key"] == s1["stages"]["data"]["key"] and s0["stages"]["distill.llama-96x2"]["key"] != s1["stages"]["distill.llama-96x2"]["key"]
    rows = [f for f in quick["first"]["findings"] if f["row"] == "gen_schedules"]
    assert rows and "sampling share" in rows[0]["note"]


def test_the_retraining_arms_prune_the_same_student_and_retrain_at_equal_steps(quick):
    root = quick["root"]
    runs = {arm: json.loads((root / f"quick-{arm}-s0" / "summary.json").read_text()) for arm in ("kd", "prune-kd", "prune-sft", "gradual", "kv")}
    student = "distill.llama-64x2-wide"
    assert len({s["stages"][student]["key"] for s in runs.values()}) == 1  # one student, from the store, for every arm
    prune = {arm: s["stages"]["prune"]["metrics"] for arm, s in runs.items()}
    assert [len(prune[a]["steps"]) for a in ("prune-kd", "prune-sft", "gradual", "kv")] == [1, 1, 2, 1]
    assert prune["prune-kd"]["steps"][0]["redistill_steps"] == prune["prune-sft"]["steps"][0]["redistill_steps"] == 10
    assert sum(step["redistill_steps"] for step in prune["gradual"]["steps"]) == 10
    assert prune["kv"]["steps"][0]["kv_keep"] == 1 and prune["kv"]["prefill_ratio"]  # 2 KV groups, half pruned
    assert "redistill_steps" not in prune["kd"]["steps"][0]  # the one-shot ratio arm is not re-trained
    kv = next(f for f in quick["first"]["findings"] if f["row"] == "kv_prune")
    assert "as fast" in kv["note"]


def test_the_scarce_label_arms_train_on_the_labeled_share(quick):
    root = quick["root"]
    student, sft = "distill.llama-64x2-wide", "distill.llama-64x2-wide-sft"
    labels, kd_all, kd = (json.loads((root / f"quick-{arm}-s0" / "summary.json").read_text())["stages"] for arm in ("labels", "labels-kd-all", "kd"))
    # the SFT twin and the KD student of the "labels" arm train on the labeled fifth; "labels-kd-all" on every group
    trained = {name: stages[stage]["metrics"]["phases"][0] for name, stages, stage in
               (("sft", labels, sft), ("kd-subset", labels, student), ("kd-all", kd_all, student), ("kd-full", kd, student))}  # fmt: skip
    assert labels[sft]["key"] != kd[sft]["key"]
    groups = {name: phase["groups"] for name, phase in trained.items()}
    assert groups["sft"] == groups["kd-subset"] and groups["kd-all"] == groups["kd-full"]
    assert 0.1 * groups["kd-full"] < groups["sft"] < 0.3 * groups["kd-full"], groups  # label_fraction 0.2


def test_the_calibration_arms_prune_on_their_own_calibration_sets(quick):
    root = quick["root"]
    prune = {arm: json.loads((root / f"quick-{arm}-s0" / "summary.json").read_text())["stages"]["prune"] for arm in ("calib-records-16", "calib-records-64", "calib-text-64")}
    assert len({p["key"] for p in prune.values()}) == 3
    errors = [p["metrics"]["steps"][0]["totals"]["mlp_relative_error_mean"] for p in prune.values()]
    assert all(e > 0 for e in errors)
    rows = [f for f in quick["first"]["findings"] if f["row"] == "calibration"]
    assert len(rows) == 3 and all("relative MLP layer error" in f["note"] for f in rows)


def test_the_quantization_arm_quantizes_the_unpruned_student_in_every_scheme(quick):
    summary = json.loads((quick["root"] / "quick-quant-g32-s0" / "summary.json").read_text())
    names = {m["name"] for m in summary["models"]}
    assert {f"llama-64x2-wide-{s}" for s in ("fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease")} <= names
    assert summary["stages"]["quantize.w4a16_gptq"]["metrics"]["group_size"] == 32
    rows = [f for f in quick["first"]["findings"] if f["row"] == "quantization"]
    assert [f["b"] for f in rows] == ["FP8", "W8A8-INT", "W4A16 GPTQ g32", "W4A16 QuantEase g32"]


def test_the_serving_row_times_the_student_and_its_pruned_self(quick):
    rows = [f for f in quick["first"]["findings"] if f["row"] == "serving"]
    assert len(rows) == 4 and all(f["metric"] == "member latency ms" for f in rows)
    assert all(v > 0 for f in rows for side in (f["a"], f["b"]) for v in f["per_seed"][side])
    assert "median member latency over 3 test members" in rows[0]["note"]
