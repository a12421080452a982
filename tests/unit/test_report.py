"""The run's results as Markdown (the Prefect artifact and the MLflow description)."""

from __future__ import annotations

from recslm.report import mlflow_run_url, summary_markdown


def _summary(**extra):
    model = {"name": "a|b", "role": "student", "params": 1000, "params_non_embedding": 10, "bytes": 4000, "auc": {"like": 0.7}, "auc_mean": 0.7,
             "auc_delta_pct": -1.0, "val_auc_mean": 0.69, "val_auc_delta_pct": -1.5, "key": "k" * 64}  # fmt: skip
    teacher = {**model, "name": "teacher", "role": "teacher", "auc_delta_pct": 0.0, "val_auc_delta_pct": 0.0}
    return {"run_id": "r1", "wall_s": 12.5, "run_dir": "/runs/r1", "models": [teacher, model],
            "stages": {"data": {"key": "d" * 64, "cached": True, "wall_s": 0.1}}, **extra}  # fmt: skip


def test_markdown_has_the_models_stages_winner_and_escapes_cells():
    text = summary_markdown(_summary(winner="a|b", registry={"candidate": "a|b", "model_name": "m", "candidate_version": 3,
                                                             "promotion": {"verdict": "champion", "reason": "first"}}),
                            mlflow_url="http://mlflow:5000/#/experiments/1/runs/x")  # fmt: skip
    assert "**Winner (chosen on val):** `a|b`" in text and "| **a\\|b** | student | 1,000 | 10 | 4,000 | 0.6900 | 0.7000 | -1.00 | -1.50 |" in text
    assert "**champion** (first)" in text and "[parent run](http://mlflow:5000/#/experiments/1/runs/x)" in text
    assert "| data | yes | 0.1 | `dddddddddddd` |" in text
    assert "none" in summary_markdown(_summary()).split("\n")[2]


def test_mlflow_links_only_for_a_server():
    assert mlflow_run_url("http://mlflow:5000/", "3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"
    assert mlflow_run_url("sqlite:////tmp/m.db", "3", "abc") is None and mlflow_run_url("http://m", None, "abc") is None
