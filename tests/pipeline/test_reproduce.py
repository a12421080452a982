"""``recslm reproduce --quick``: every row on tiny settings, through the pipeline's own flow."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ROWS = {"kd_vs_sft", "loss_choice", "prune_ratio", "size"}
VERDICTS = {"holds", "does not hold", "no signal at this scale"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory, prefect_harness, repo_root):
    from flows.reproduce import reproduce
    from recslm.reproduce.study import load_study

    root = tmp_path_factory.mktemp("reproduce")
    study = load_study(repo_root / "configs" / "reproduce.yaml")
    study = study.model_copy(update={"quick": [*study.quick, f"run.root={root}"]})
    first = reproduce(study, quick=True, study_id="quick", name="reproduce")
    # again, the rows that read the KD arm and the most pruned arm: all of it must come from the store
    second = reproduce(study.model_copy(update={"rows": ["kd_vs_sft", "size"]}), quick=True, study_id="again", name="reproduce")
    return {"root": root, "first": first, "second": second}


def test_every_row_carries_an_effect_an_interval_and_a_verdict(quick):
    out = quick["root"] / "reproduce" / "quick"
    report = json.loads((out / "reproduce.json").read_text())
    assert report["header"]["quick"] is True and report["header"]["seeds"] == [0, 1]
    assert {f["row"] for f in report["findings"]} == ROWS
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
    runs = sorted(p.name for p in quick["root"].iterdir() if p.name.startswith("quick-"))
    assert len(runs) == 8  # 4 arms x 2 seeds (the pruning rides on the KD arm)
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
