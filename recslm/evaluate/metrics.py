"""Ranking quality: AUC per task (scikit-learn), their mean, and deltas vs the teacher."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auc_per_task(tasks: Sequence[str], labels: Sequence[int], scores: Sequence[float]) -> dict[str, float]:
    """ROC AUC of the scores against the labels, pooled over members, for each task.

    A task whose test labels are all one class has no AUC; it is left out (and so out of
    the mean) rather than reported as a number that means nothing.
    """
    from sklearn.metrics import roc_auc_score  # lazy: cached pipeline runs never import sklearn

    tasks_arr = np.asarray(tasks)
    labels_arr = np.asarray(labels)
    scores_arr = np.asarray(scores, dtype=np.float64)
    result: dict[str, float] = {}
    for task in sorted(set(tasks_arr.tolist())):
        mask = tasks_arr == task
        if len(np.unique(labels_arr[mask])) < 2:
            continue
        result[task] = float(roc_auc_score(labels_arr[mask], scores_arr[mask]))
    return result


def mean_auc(per_task: dict[str, float]) -> float:
    """Unweighted mean over tasks (each task counts once, whatever its size)."""
    if not per_task:
        raise ValueError("no task has both positive and negative labels: AUC is undefined")
    return float(np.mean(list(per_task.values())))


def delta_pct(value: float, reference: float) -> float:
    """Relative change in percent: 100 * (value - reference) / reference."""
    return 100.0 * (value - reference) / reference
