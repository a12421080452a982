"""How much of logistic regression's lead is the prompt's resolution?

The teacher reads item popularity, recent ratings and means as coarse words ("niche, avg 3.5,
slow"); logistic regression reads them as numbers, plus the item's age, which the prompt does
not show. This fits the same per-task logistic regression (C chosen on val, as the baselines
stage does) on feature sets of increasing resolution and prints val mean AUC for each, with
the full set measured in the same run as the baseline:

- ``printed``: what the words-style prompt shows, at its resolution (popularity and recency
  buckets, means to half a star), plus what a reader can derive from the shown history;
- ``printed+age``: the same and the item's age (days since its first rating);
- ``fine``: counts and means as numbers (``data.stats_style: scale`` shows log2 counts and the
  mean to 0.1), no age;
- ``full``: the baselines stage's features.

    .venv/bin/python benchmarks/prompt_resolution.py --data runs/store/data/<key> [--max-train 200000]

Reads the data artifact's records; fits on its train split, scores its val split only.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from recslm.baselines.features import DecisionTimeFeatures
from recslm.baselines.models import Split, logistic_regression
from recslm.data.build import load_split
from recslm.data.movielens import load_movielens
from recslm.data.prompts import POPULARITY, RECENCY


def _bucket(count: np.ndarray, table: tuple[tuple[int, str], ...]) -> np.ndarray:
    floors = np.array(sorted(f for f, _ in table))
    index = np.searchsorted(floors, count, side="right") - 1
    return np.eye(len(floors))[index]


def feature_sets(names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    col = {n: i for i, n in enumerate(names)}
    count = np.expm1(x[:, col["item_log_count"]]).round()
    recent = np.expm1(x[:, col["item_recent_log_count"]]).round()
    half = lambda v: np.round(v * 2) / 2  # noqa: E731
    derived = [c for c in names if c.startswith(("member_", "occupation=", "genre")) or c in ("history_len", "genre_affinity_mean", "genre_affinity_max", "history_mean_same_genre", "history_same_genre_count")]
    member = x[:, [col[c] for c in derived]]
    printed = np.column_stack([_bucket(count, POPULARITY), _bucket(recent, RECENCY), half(x[:, col["item_mean"]]), half(x[:, col["history_mean"]]), member])
    age = x[:, [col["item_age_days"]]]
    fine = np.column_stack([np.log2(count + 1), np.log2(recent + 1), np.round(x[:, col["item_mean"]], 1), np.round(x[:, col["history_mean"]], 1), member])
    return {"printed": printed, "printed+age": np.column_stack([printed, age]), "fine": fine, "full": x}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a data artifact folder (records/)")
    parser.add_argument("--history-len", type=int, default=10)
    args = parser.parse_args()
    started = time.perf_counter()
    features = DecisionTimeFeatures(load_movielens(), args.history_len)
    raw = {}
    for split in ("train", "val"):
        records = load_split(args.data, split)
        raw[split] = (features.matrix(records), np.array([r.task for r in records]), np.array([r.label for r in records]))
    sets = {split: feature_sets(features.names, x) for split, (x, _, _) in raw.items()}
    results = {}
    for name in sets["train"]:
        splits = {split: Split(sets[split][name], raw[split][1], raw[split][2]) for split in raw}
        splits["test"] = splits["val"]  # only val is read here
        fitted = logistic_regression(splits, seed=0)
        results[name] = fitted.metrics(splits, "val")
    full = results["full"]["val_auc_mean"]
    for name, m in results.items():
        tasks = " ".join(f"{t} {v:.4f}" for t, v in sorted(m["val_auc"].items()))
        print(f"{name:<12} val mean AUC {m['val_auc_mean']:.4f} ({tasks}); {m['val_auc_mean'] - full:+.4f} vs full")
    print(f"{len(raw['train'][2]):,} train records; {time.perf_counter() - started:.0f} s; machine: {platform.machine()} {os.cpu_count()} CPUs; "
          f"date {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
