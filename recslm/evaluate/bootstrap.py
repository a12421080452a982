"""Paired bootstrap of a mean-AUC difference between two models scored on the same records.

"The teacher beats logistic regression" is a claim about one test set; how sure it is depends
on how many independent members that set holds, not on its record count (a member's records
are correlated: same history, same tastes). So the interval resamples *members* with
replacement (a cluster bootstrap) and recomputes both models' per-task AUCs on each draw; the
two models always see the same draw (paired), which removes the shared record noise from the
difference. Draws are weights (how often each member was drawn), so no records are copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """mean AUC(a) - mean AUC(b) over tasks, with its percentile interval over member draws."""

    difference: float
    low: float
    high: float
    level: float
    draws: int
    members: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def text(self) -> str:
        return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}] ({self.level:.0%}, {self.draws} draws over {self.members} members)"


class _TaskAUC:
    """Weighted AUC of one model on one task's records for any member weights, in O(records):
    the score order never changes between draws, so it is sorted once and each draw only sums
    weighted positives and negatives per tied score (ties count one half, as in scikit-learn)."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        _, self.group = np.unique(scores, return_inverse=True)  # tie groups, ascending score
        self.groups = int(self.group.max()) + 1 if len(scores) else 0
        self.positive = labels.astype(np.float64)

    def __call__(self, weights: np.ndarray) -> float:
        pos = np.bincount(self.group, weights * self.positive, self.groups)
        neg = np.bincount(self.group, weights * (1.0 - self.positive), self.groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:  # a draw with one class only: AUC undefined
            return float("nan")
        below = np.cumsum(neg) - neg
        return float(np.dot(pos, below + 0.5 * neg) / (total_pos * total_neg))


class _MeanAUC:
    """Mean over tasks of the per-task weighted AUC of one model."""

    def __init__(self, tasks: np.ndarray, labels: np.ndarray, scores: np.ndarray):
        self.rows = [tasks == task for task in sorted(set(tasks.tolist()))]
        self.aucs = [_TaskAUC(labels[rows], scores[rows]) for rows in self.rows]

    def __call__(self, weights: np.ndarray) -> float:
        return float(np.mean([auc(weights[rows]) for auc, rows in zip(self.aucs, self.rows, strict=True)]))


def paired_auc_difference(
    tasks: Sequence[str],
    labels: Sequence[int],
    members: Sequence[str],
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    *,
    draws: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Difference of mean per-task AUC (a - b) on the given records and its member-bootstrap interval."""
    tasks_, labels_ = np.asarray(tasks), np.asarray(labels)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if not (len(tasks_) == len(labels_) == len(members) == len(a) == len(b)):
        raise ValueError("tasks, labels, members and both score lists must have one entry per record")
    auc_a, auc_b = _MeanAUC(tasks_, labels_, a), _MeanAUC(tasks_, labels_, b)
    member_ids, member_index = np.unique(np.asarray(members), return_inverse=True)
    ones = np.ones(len(a))
    point = auc_a(ones) - auc_b(ones)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        counts = rng.multinomial(len(member_ids), np.full(len(member_ids), 1.0 / len(member_ids)))
        weights = counts[member_index].astype(np.float64)
        samples.append(auc_a(weights) - auc_b(weights))
    finite = np.asarray([s for s in samples if np.isfinite(s)])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail]) if len(finite) else (float("nan"), float("nan"))
    return PairedDifference(float(point), float(low), float(high), level, int(len(finite)), int(len(member_ids)))
