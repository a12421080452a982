"""Would averaging teachers close their gap to logistic regression?

Training seeds move the demo teacher's mean AUC by up to 0.008 (README, Figures). If the gap
to logistic regression were seed noise, the mean of several teachers' logits (a seed
ensemble: the cheapest variance reduction there is) would close it. This reads the evaluate
artifacts of two or more teachers trained on the same data key, averages their logits record
by record, and prints per split the mean AUC (like / love / next) of each member, of the
ensemble, and of logistic regression, with the paired member-bootstrap interval of
ensemble - logistic regression and ensemble - its best member on val.

    .venv/bin/python benchmarks/teacher_ensemble.py \\
        --evaluate runs/store/evaluate/<teacher A key> --evaluate runs/store/evaluate/<teacher B key> \\
        --baselines runs/store/baselines/<key>

Nothing is re-scored: the ensemble is a statement about teachers already trained, so it costs
seconds. Test is printed beside val for the record; a decision reads val.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit as log_odds
from sklearn.metrics import roc_auc_score

from recslm.evaluate.bootstrap import paired_auc_difference
from recslm.evaluate.compare import on_same_records

SPLIT_FILES = {"val": ("scores-val.parquet", "scores-val.parquet"), "test": ("scores.parquet", "scores-test.parquet")}
REFERENCE = "logistic_regression"


def logit(probability: np.ndarray) -> np.ndarray:
    """The log-odds of a score; clipped so a saturated probability stays finite."""
    return log_odds(np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7))


def ensemble_logits(members: list[pd.DataFrame]) -> np.ndarray:
    """Mean log-odds of the members, record by record. Every member must score the same records
    in the same order (same data key); anything else would pair unrelated records."""
    first = members[0]
    for index, other in enumerate(members[1:], start=1):
        if not on_same_records(first, other):
            raise ValueError(f"member {index} does not score the same records as member 0 (a different data key?)")
    return np.mean([logit(member["score"].to_numpy()) for member in members], axis=0)


def task_aucs(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """AUC per task, in the records' task order."""
    return {str(task): float(roc_auc_score(frame["label"].to_numpy()[rows], scores[rows])) for task in dict.fromkeys(frame["task"]) for rows in [frame["task"].to_numpy() == task]}


def describe(name: str, aucs: dict[str, float]) -> str:
    return f"  {name:<22} mean {np.mean(list(aucs.values())):.4f} (" + " / ".join(f"{auc:.4f}" for auc in aucs.values()) + ")"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluate", type=Path, action="append", required=True, help="a teacher's evaluate artifact (repeat, two or more)")
    parser.add_argument("--baselines", type=Path, required=True, help="the baselines artifact of the same data key")
    parser.add_argument("--draws", type=int, default=1000, help="member-bootstrap draws per interval")
    args = parser.parse_args()
    if len(args.evaluate) < 2:
        parser.error("an ensemble needs at least two --evaluate artifacts")
    best_index = None  # the best member on val, reused on test (test decides nothing)
    for split, (teacher_file, baseline_file) in SPLIT_FILES.items():
        members = [pd.read_parquet(path / teacher_file) for path in args.evaluate]
        baselines = pd.read_parquet(args.baselines / baseline_file)
        if not on_same_records(members[0], baselines):
            raise SystemExit(f"{args.baselines / baseline_file}: not the same {split} records as the teachers (a different data key?)")
        frame = members[0]
        combined = ensemble_logits(members)
        reference = baselines[REFERENCE].to_numpy()
        member_means = []
        print(f"{split} ({len(frame)} records, {frame['member_id'].nunique()} members), AUC mean ({' / '.join(dict.fromkeys(frame['task']))}):")
        for path, member in zip(args.evaluate, members, strict=True):
            aucs = task_aucs(frame, logit(member["score"].to_numpy()))
            member_means.append(np.mean(list(aucs.values())))
            print(describe(path.name[:12], aucs))
        print(describe(f"ensemble of {len(members)}", task_aucs(frame, combined)))
        print(describe(REFERENCE, task_aucs(frame, reference)))
        best_index = int(np.argmax(member_means)) if best_index is None else best_index
        pairs = {f"ensemble - {REFERENCE}": reference, "ensemble - best member on val": logit(members[best_index]["score"].to_numpy())}
        for label, other in pairs.items():
            difference = paired_auc_difference(frame["task"], frame["label"], frame["member_id"], combined, other, draws=args.draws)
            print(f"  {label:<36} {difference.text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
