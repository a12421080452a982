"""benchmarks/teacher_ensemble.py: averaging teachers' logits record by record, on synthetic
scores where the answer is known (two noisy views of one signal average to a better one)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def ensemble():
    return load_benchmark("teacher_ensemble")


def _records(rng: np.random.Generator, n: int = 3000) -> pd.DataFrame:
    return pd.DataFrame({"member_id": [f"m{i % 60}" for i in range(n)], "task": np.array(["like", "love", "next"])[np.arange(n) % 3], "label": rng.integers(0, 2, n)})


def _noisy_view(records: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    logits = 1.0 * (2 * records["label"].to_numpy() - 1) + rng.normal(0, 2.0, len(records))
    return records.assign(score=1 / (1 + np.exp(-logits)))


def test_the_mean_of_two_independent_noisy_teachers_orders_better_than_either(ensemble):
    rng = np.random.default_rng(0)
    records = _records(rng)
    a, b = _noisy_view(records, rng), _noisy_view(records, rng)
    combined = ensemble.ensemble_logits([a, b])
    mean = lambda scores: np.mean(list(ensemble.task_aucs(records, scores).values()))  # noqa: E731
    assert mean(combined) > max(mean(a["score"].to_numpy()), mean(b["score"].to_numpy())) + 0.01
    assert np.allclose(combined, (ensemble.logit(a["score"]) + ensemble.logit(b["score"])) / 2)


def test_members_scored_on_different_records_are_refused(ensemble):
    rng = np.random.default_rng(1)
    records = _records(rng)
    a = _noisy_view(records, rng)
    shuffled = a.iloc[rng.permutation(len(a))].reset_index(drop=True)
    with pytest.raises(ValueError, match="member 1 does not score the same records"):
        ensemble.ensemble_logits([a, shuffled])


def test_the_command_prints_both_splits_with_intervals_against_logistic_regression(ensemble, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(2)
    dirs = [tmp_path / "teacher-a", tmp_path / "teacher-b", tmp_path / "baselines"]
    for path in dirs:
        path.mkdir()
    for split, teacher_file, baseline_file in [("val", "scores-val.parquet", "scores-val.parquet"), ("test", "scores.parquet", "scores-test.parquet")]:
        records = _records(rng)
        for teacher in dirs[:2]:
            _noisy_view(records, rng).to_parquet(teacher / teacher_file)
        records.assign(logistic_regression=_noisy_view(records, rng)["score"]).drop(columns=["member_id"]).to_parquet(dirs[2] / baseline_file)
    monkeypatch.setattr(sys, "argv", ["teacher_ensemble.py", "--evaluate", str(dirs[0]), "--evaluate", str(dirs[1]), "--baselines", str(dirs[2]), "--draws", "50"])
    assert ensemble.main() == 0
    out = capsys.readouterr().out
    assert out.count("ensemble of 2") == 2 and "val (3000 records, 60 members)" in out and "test (3000 records" in out
    assert out.count("ensemble - logistic_regression") == 2 and "(95%, 50 draws over 60 members)" in out


def test_baselines_of_another_data_key_stop_the_command_with_the_file_named(ensemble, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    records = _records(rng)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _noisy_view(records, rng).to_parquet(tmp_path / name / "scores-val.parquet")
    (tmp_path / "baselines").mkdir()
    _records(rng, 100).assign(logistic_regression=0.5).to_parquet(tmp_path / "baselines" / "scores-val.parquet")
    monkeypatch.setattr(sys, "argv", ["teacher_ensemble.py", "--evaluate", str(tmp_path / "a"), "--evaluate", str(tmp_path / "b"), "--baselines", str(tmp_path / "baselines")])
    with pytest.raises(SystemExit, match="scores-val.parquet: not the same val records"):
        ensemble.main()
