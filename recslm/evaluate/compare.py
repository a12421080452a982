"""Compare two models of a finished run on the same records: ``recslm compare RUN A B``.

Reads the scores the run's evaluate stages (and the baselines stage) wrote, so nothing is
re-scored, and returns A − B in mean AUC on val and on the reported split with the paired
member-bootstrap interval of :mod:`recslm.evaluate.bootstrap`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from recslm.errors import ConfigError
from recslm.evaluate.bootstrap import PairedDifference, paired_auc_difference


def on_same_records(x: pd.DataFrame, y: pd.DataFrame) -> bool:
    """Two score tables in the same record order (same length, tasks and labels): the pairing
    every difference here relies on."""
    return len(x) == len(y) and bool((x["task"].to_numpy() == y["task"].to_numpy()).all()) and bool((x["label"].to_numpy() == y["label"].to_numpy()).all())


def _stage_dir(summary: dict[str, Any], stage: str) -> Path:
    record = summary["stages"].get(stage)
    if record is None:
        raise ConfigError(f"run {summary.get('run_id')}: no {stage} stage in summary.json")
    return Path(record["uri"].removeprefix("file://"))


def model_scores(summary: dict[str, Any], name: str, split: str) -> pd.DataFrame:
    """member_id, task, label, score of one model (an LM or a baseline) on ``split`` (val or the reported one)."""
    roles = {m["name"]: m["role"] for m in summary.get("models", [])}
    if name not in roles:
        raise ConfigError(f"run {summary.get('run_id')}: no model named {name!r}; the run has {', '.join(roles)}")
    reported = summary["stages"]["evaluate"]["metrics"].get("split", "test")
    if split not in ("val", reported):
        raise ConfigError(f"split {split!r}: the run scored val and {reported}")
    file = "scores.parquet" if split == reported else f"scores-{split}.parquet"
    teacher = pd.read_parquet(_stage_dir(summary, "evaluate") / file)
    if roles[name] == "teacher":
        return teacher
    if roles[name] == "baseline":  # baseline scores are in record order without ids: borrow the teacher's
        theirs = pd.read_parquet(_stage_dir(summary, "baselines") / f"scores-{split}.parquet")
        return teacher.assign(score=theirs[name].to_numpy())
    return pd.read_parquet(_stage_dir(summary, f"evaluate.{name}") / file)


def compare_models(summary: dict[str, Any], a: str, b: str, draws: int = 1000, seed: int = 0) -> dict[str, PairedDifference]:
    """A − B per split (val first), paired over the same records."""
    reported = summary["stages"]["evaluate"]["metrics"].get("split", "test")
    out: dict[str, PairedDifference] = {}
    for split in dict.fromkeys(("val", reported)):
        x, y = model_scores(summary, a, split), model_scores(summary, b, split)
        if not on_same_records(x, y):
            raise ConfigError(f"{a} and {b} were not scored on the same {split} records")
        out[split] = paired_auc_difference(x["task"], x["label"], x["member_id"], x["score"], y["score"], draws=draws, seed=seed)
    return out
