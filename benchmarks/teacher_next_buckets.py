"""Where the teacher loses to logistic regression on *next*: inside the popularity words, or on
titles it memorized?

    .venv/bin/python benchmarks/teacher_next_buckets.py --data runs/store/data/<key> \\
        --evaluate runs/store/evaluate/<teacher's key> --baselines runs/store/baselines/<key>

Reads the val records of the *next* task (decisions may read val; test stays for the run's
report) and prints:
- AUC of the teacher, popularity so far and logistic regression, overall and inside each
  popularity word the prompt prints ("new" ... "very popular"): if the teacher only missed
  the ordering of the words, it would tie logistic regression inside each word;
- the same split by whether the candidate's title was a candidate of *next* in training
  (titles the teacher could have memorized), and the rank correlation inside each word
  between the teacher's logit and the title's count of training positives;
- the same AUCs with each score centred inside its decision (one member's prompt and its
  candidates): what is left is how each scorer orders the candidates of one decision, without
  the offsets between decisions that a pooled AUC also grades.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from recslm.data.build import load_split


def _title(candidate: str) -> str:
    return candidate.split(" | ")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the run's data artifact")
    parser.add_argument("--evaluate", type=Path, required=True, help="the teacher's evaluate artifact (scores-val.parquet)")
    parser.add_argument("--baselines", type=Path, required=True, help="the run's baselines artifact (scores-val.parquet)")
    args = parser.parse_args()
    teacher = pd.read_parquet(args.evaluate / "scores-val.parquet")
    baselines = pd.read_parquet(args.baselines / "scores-val.parquet")
    val = load_split(args.data, "val")
    if not len(teacher) == len(baselines) == len(val) or not (teacher["label"].values == baselines["label"].values).all():
        raise SystemExit("the artifacts do not score the same val records in the same order (different data keys?)")
    frame = pd.DataFrame({"task": teacher["task"], "label": teacher["label"], "teacher": np.log(teacher["score"] / (1 - teacher["score"])),
                          "popularity": baselines["popularity"], "logistic_regression": baselines["logistic_regression"],
                          "decision": pd.factorize(pd.Series([f"{r.member_id}|{r.task}|{r.prefix}" for r in val]))[0],
                          "title": [_title(r.candidate) for r in val], "word": [r.candidate.rsplit(" | ", 1)[-1].split(",")[0] for r in val]})  # fmt: skip
    train = pd.DataFrame([(r.task, _title(r.candidate), r.label) for r in load_split(args.data, "train") if r.task == "next"], columns=["task", "title", "label"])
    positives, seen = train[train.label == 1].title.value_counts(), set(train.title)
    nxt = frame[frame.task == "next"].assign(train_positives=lambda f: f.title.map(positives).fillna(0), seen=lambda f: f.title.isin(seen))
    scorers = ["teacher", "popularity", "logistic_regression"]

    def line(name: str, rows: pd.DataFrame, extra: str = "") -> None:
        if rows.label.nunique() < 2:
            return
        aucs = "".join(f"{roc_auc_score(rows.label, rows[s]):>21.4f}" for s in scorers)
        print(f"{name:<28}{len(rows):>7}{rows.label.mean():>9.3f}{aucs}  {extra}")

    print(f"{'next, val':<28}{'records':>7}{'pos':>9}" + "".join(f"{s:>21}" for s in scorers))
    line("all", nxt)
    for word, rows in nxt.groupby("word"):
        rho = spearmanr(rows.teacher, rows.train_positives)[0]
        line(f"inside '{word}'", rows, f"spearman(teacher, train positives of the title) {rho:+.3f}")
    line("title seen in training", nxt[nxt.seen])
    line("title never seen", nxt[~nxt.seen])
    line("centred inside each decision", nxt.assign(**{s: nxt[s] - nxt.groupby("decision")[s].transform("mean") for s in scorers}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
