"""The member-bootstrap interval of a paired mean-AUC difference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recslm.evaluate.bootstrap import paired_auc_difference


def _records(members: int, per_member: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = members * per_member
    member = np.repeat([f"m{i}" for i in range(members)], per_member)
    task = np.tile(["like", "next"], n // 2)
    label = rng.integers(0, 2, n)
    return rng, member, task, label


def test_point_estimate_is_the_mean_auc_difference():
    rng, member, task, label = _records(40, 10)
    a = label + rng.normal(0, 1.0, len(label))
    b = label + rng.normal(0, 2.0, len(label))
    result = paired_auc_difference(task, label, member, a, b, draws=200)
    expected = np.mean([roc_auc_score(label[task == t], a[task == t]) - roc_auc_score(label[task == t], b[task == t]) for t in ("like", "next")])
    assert result.difference == pytest.approx(expected)
    assert result.low < result.difference < result.high and result.members == 40 and result.draws == 200


def test_a_clearly_better_model_has_an_interval_above_zero_and_identical_models_a_point_at_zero():
    rng, member, task, label = _records(100, 20)
    good = label + rng.normal(0, 0.5, len(label))
    bad = label + rng.normal(0, 3.0, len(label))
    assert paired_auc_difference(task, label, member, good, bad, draws=200).low > 0
    same = paired_auc_difference(task, label, member, good, good, draws=50)
    assert same.difference == same.low == same.high == 0.0


def test_the_interval_widens_when_records_cluster_by_member():
    """Ten copies of each member's records add no evidence: the interval must not shrink like 1/sqrt(records)."""
    rng, member, task, label = _records(30, 4, seed=3)
    a = label + rng.normal(0, 1.0, len(label))
    b = label + rng.normal(0, 1.2, len(label))
    once = paired_auc_difference(task, label, member, a, b, draws=300, seed=1)
    tiled = paired_auc_difference(np.tile(task, 10), np.tile(label, 10), np.tile(member, 10), np.tile(a, 10), np.tile(b, 10), draws=300, seed=1)
    assert (tiled.high - tiled.low) == pytest.approx(once.high - once.low, rel=0.35)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="one entry per record"):
        paired_auc_difference(["like"], [1, 0], ["m"], [0.1], [0.2])


def test_the_weighted_auc_of_a_draw_equals_scikit_learns_with_ties():
    from recslm.evaluate.bootstrap import _TaskAUC

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 500)
    scores = np.round(labels * 0.3 + rng.normal(0, 1, 500), 1)  # rounded: many ties
    weights = rng.integers(0, 4, 500).astype(float)
    assert _TaskAUC(labels, scores)(weights) == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights), abs=1e-12)
    assert _TaskAUC(labels, scores)(np.ones(500)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
