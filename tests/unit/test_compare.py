"""recslm compare: two models of a finished run, paired on the same records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recslm.cli import app
from recslm.errors import ConfigError
from recslm.evaluate.compare import compare_models


def _run(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    base = pd.DataFrame({"member_id": np.repeat([f"m{i}" for i in range(50)], 8), "task": np.tile(["like", "next"], n // 2), "label": rng.integers(0, 2, n)})
    good = base.label + rng.normal(0, 0.6, n)
    poor = base.label + rng.normal(0, 3.0, n)
    stages = {}
    for stage, score in (("evaluate", good), ("evaluate.student", poor)):
        folder = tmp_path / stage
        folder.mkdir()
        for file in ("scores.parquet", "scores-val.parquet"):
            base.assign(score=score).to_parquet(folder / file)
        stages[stage] = {"uri": str(folder), "metrics": {"split": "test"}}
    (tmp_path / "baselines").mkdir()
    for split in ("val", "test"):
        pd.DataFrame({"task": base.task, "label": base.label, "popularity": poor}).to_parquet(tmp_path / "baselines" / f"scores-{split}.parquet")
    stages["baselines"] = {"uri": str(tmp_path / "baselines"), "metrics": {}}
    models = [{"name": "teacher", "role": "teacher"}, {"name": "student", "role": "student"}, {"name": "popularity", "role": "baseline"}]
    summary = {"run_id": "r", "stages": stages, "models": models}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return summary


def test_a_better_model_is_ahead_on_both_splits_and_a_baseline_reads_like_an_lm(tmp_path):
    summary = _run(tmp_path)
    result = compare_models(summary, "teacher", "student", draws=200)
    assert list(result) == ["val", "test"] and all(d.low > 0 for d in result.values())
    same = compare_models(summary, "student", "popularity", draws=50)  # the same scores under two names
    assert same["test"].difference == 0.0


def test_unknown_names_and_the_cli(tmp_path):
    summary = _run(tmp_path)
    with pytest.raises(ConfigError, match="no model named 'nope'.*teacher, student, popularity"):
        compare_models(summary, "teacher", "nope")
    out = CliRunner().invoke(app, ["compare", str(tmp_path), "teacher", "student", "--draws", "100"])
    assert out.exit_code == 0 and "teacher - student on test: +" in out.output
    assert CliRunner().invoke(app, ["compare", str(tmp_path / "missing"), "a", "b"]).exit_code != 0
