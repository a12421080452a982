"""How much of logistic regression's lead is the prompt's resolution, and which rendering keeps most?

The teacher reads item popularity, recent ratings and means as the prompt renders them
(``data.stats_style``); logistic regression reads them as numbers, plus the item's age, which
the prompt does not show. This fits the same per-task logistic regression (C chosen on val,
as the baselines stage does) on what each rendering prints and prints val mean AUC for each,
with the full feature set measured in the same run as the baseline:

- ``words``, ``scale``, ``rank``, ``rank_scale``: what that ``stats_style`` prints with
  ``item_recent`` (the candidate's stats exactly as rendered: ``ItemHistory.before`` at the
  group's decision time), plus what a reader can derive from the shown history;
- ``words+age``: the words and the item's age (days since its first rating);
- ``numbers``: counts and means as numbers, no age;
- ``full``: the baselines stage's features.

    .venv/bin/python benchmarks/prompt_resolution.py --data runs/store/data/<key>

Reads the data artifact's records; fits on its train split, scores its val split only.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from recslm.baselines.features import DecisionTimeFeatures, decision_groups
from recslm.baselines.models import Split, logistic_regression
from recslm.data.build import load_split
from recslm.data.movielens import ItemHistory, load_movielens
from recslm.data.prompts import POPULARITY, RECENCY, TOP_PERCENT, log2_scale, top_percent


def _onehot(index: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size)[np.clip(index.astype(int), 0, size - 1)]


def _bucket(count: np.ndarray, table: tuple[tuple[int, str], ...]) -> np.ndarray:
    floors = np.array(sorted(f for f, _ in table))
    return _onehot(np.searchsorted(floors, count, side="right") - 1, len(floors))


def printed_stats(records: list, item_history: ItemHistory) -> np.ndarray:
    """Per record (count, 30-day count, mean, rank bucket) as the prompt's stats are computed:
    at the group's decision time (its first candidate's time); rank bucket 0 is "new"."""
    when = np.array([at for group, at in decision_groups(records) for _ in group], dtype=np.int64)
    out = np.zeros((len(records), 4))
    for i in np.argsort(when, kind="stable"):  # time order: one catalogue count per decision time
        stats = item_history.before(int(records[i].item_id), int(when[i]), recent=True, rank=True)
        out[i] = (stats.count, stats.recent, stats.mean, 0 if stats.count == 0 else 1 + TOP_PERCENT.index(top_percent(stats.share_above)))
    return out


def feature_sets(names: list[str], x: np.ndarray, printed: np.ndarray) -> dict[str, np.ndarray]:
    col = {n: i for i, n in enumerate(names)}
    count, recent, mean, rank = printed.T
    half = lambda v: np.round(v * 2) / 2  # noqa: E731
    tenth = lambda v: np.round(v * 10) / 10  # noqa: E731
    log2 = lambda v: _onehot(np.array([log2_scale(int(c)) for c in v]), 11)  # noqa: E731
    derived = [c for c in names if c.startswith(("member_", "occupation=", "genre")) or c in ("history_len", "genre_affinity_mean", "genre_affinity_max", "history_mean_same_genre", "history_same_genre_count")]
    member = np.column_stack([half(x[:, col["history_mean"]]), x[:, [col[c] for c in derived]]])
    words = np.column_stack([_bucket(count, POPULARITY), _bucket(recent, RECENCY), half(mean), member])
    return {
        "words": words,
        "scale": np.column_stack([log2(count), log2(recent), tenth(mean), member]),
        "rank": np.column_stack([_onehot(rank, len(TOP_PERCENT) + 1), _bucket(recent, RECENCY), half(mean), member]),
        "rank_scale": np.column_stack([_onehot(rank, len(TOP_PERCENT) + 1), log2(recent), tenth(mean), member]),
        "words+age": np.column_stack([words, x[:, [col["item_age_days"]]]]),
        "numbers": np.column_stack([np.log2(count + 1), np.log2(recent + 1), tenth(mean), member]),
        "full": x,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a data artifact folder (records/)")
    parser.add_argument("--history-len", type=int, default=10)
    args = parser.parse_args()
    started = time.perf_counter()
    movielens = load_movielens()
    features, item_history = DecisionTimeFeatures(movielens, args.history_len), ItemHistory(movielens.ratings)
    raw, sets = {}, {}
    for split in ("train", "val"):
        records = load_split(args.data, split)
        raw[split] = (features.matrix(records), np.array([r.task for r in records]), np.array([r.label for r in records]))
        sets[split] = feature_sets(features.names, raw[split][0], printed_stats(records, item_history))
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
