"""Does the teacher know something the non-LM baselines do not, task by task?

Reads a run's teacher scores and its baselines' scores on the same val records and prints,
per task, the AUC of each, and of logistic blends fitted with 5-fold cross-validation over
members (no member in both the fitting and the scoring fold):

- ``LR+teacher``: logistic regression's score plus the teacher's logit. Above LR alone: the
  teacher carries signal the features miss; equal: the teacher's signal is a subset of LR's.
- ``teacher+pop``: the teacher's logit plus popularity so far. Above the teacher alone: the
  teacher under-uses popularity, which its prompt prints.

    .venv/bin/python benchmarks/teacher_vs_features.py --evaluate runs/store/evaluate/<teacher's key> \\
        --baselines runs/store/baselines/<key>

Val only: this reads what decisions may read; test stays for the run's report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

BLENDS = {"LR+teacher": ["logistic_regression", "teacher"], "LR+popularity": ["logistic_regression", "popularity"], "teacher+popularity": ["teacher", "popularity"]}


def blended_auc(frame: pd.DataFrame, columns: list[str], folds: int = 5) -> float:
    """AUC of a logistic blend of ``columns``, each record scored by a blend fitted on other members."""
    predicted = np.zeros(len(frame))
    for fit, score in GroupKFold(folds).split(frame, groups=frame["member_id"]):
        model = LogisticRegression(max_iter=1000).fit(frame.iloc[fit][columns], frame.iloc[fit]["label"])
        predicted[score] = model.decision_function(frame.iloc[score][columns])
    return float(roc_auc_score(frame["label"], predicted))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluate", type=Path, required=True, help="the teacher's evaluate artifact (scores-val.parquet)")
    parser.add_argument("--baselines", type=Path, required=True, help="the run's baselines artifact (scores-val.parquet)")
    args = parser.parse_args()
    teacher = pd.read_parquet(args.evaluate / "scores-val.parquet")
    baselines = pd.read_parquet(args.baselines / "scores-val.parquet")
    if len(teacher) != len(baselines) or not (teacher["label"].values == baselines["label"].values).all():
        raise SystemExit("the two artifacts do not score the same val records in the same order (different data keys?)")
    frame = baselines.assign(teacher=np.log(teacher["score"] / (1 - teacher["score"])), member_id=teacher["member_id"].values)
    singles = ["teacher", "popularity", "logistic_regression", "gradient_boosting"]
    print(f"{'task':<6}" + "".join(f"{name:>20}" for name in [*singles, *BLENDS]))
    for task, rows in frame.groupby("task", sort=False):
        aucs = [roc_auc_score(rows["label"], rows[name]) for name in singles] + [blended_auc(rows, columns) for columns in BLENDS.values()]
        print(f"{task:<6}" + "".join(f"{auc:>20.4f}" for auc in aucs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
