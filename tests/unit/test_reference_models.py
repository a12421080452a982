"""Non-LM reference models: decision-time features without look-ahead, choices made on val."""

from __future__ import annotations

import numpy as np
import pytest

from recslm.baselines.features import DecisionTimeFeatures
from recslm.baselines.models import NAMES, Split, fit_baselines
from recslm.config import DataConfig
from recslm.data.movielens import MovieLens, build_ranking_splits
from recslm.evaluate.metrics import auc_per_task
from tests.unit.test_data import groups_of

CFG = DataConfig(history_len=6, candidates_per_member=4, train_stride=24, eval_stride=16, max_eval_members=60, max_train_groups=900)


@pytest.fixture(scope="module")
def splits(ml):
    return build_ranking_splits(ml, CFG)


@pytest.fixture(scope="module")
def features(ml):
    return DecisionTimeFeatures(ml, CFG.history_len)


def _before(ml: MovieLens, when: int) -> MovieLens:
    """The event log as it stood at ``when``: every rating at or after it deleted."""
    return MovieLens(ratings=ml.ratings[ml.ratings.timestamp < when].reset_index(drop=True), items=ml.items, users=ml.users)


def test_features_use_only_events_before_the_decision_time(ml, splits, features):
    """For sampled groups of every split and task, features from the whole log equal features
    from a log truncated at the group's decision time t: nothing at or after t is read."""
    rng = np.random.default_rng(0)
    groups = [g for split in ("train", "val", "test") for g in groups_of(splits[split])]
    changed = 0
    for index in rng.choice(len(groups), size=24, replace=False):
        group = groups[index]
        when = min(r.ts for r in group)
        full = features.matrix(group)
        truncated = DecisionTimeFeatures(_before(ml, when), CFG.history_len).matrix(group)
        np.testing.assert_array_equal(full, truncated, err_msg=f"{group[0].task} group of member {group[0].member_id} at {when}")
        # the check can fail: a week later, the same member and items have other features
        later = np.vstack(features.group_rows(int(group[0].member_id), [int(r.item_id) for r in group], when + 7 * 86_400))
        changed += not np.array_equal(full, later)
    assert changed > 12


def test_shown_history_matches_the_prompt(splits, features):
    """The history features are computed from the history the prompt prints (its length)."""
    column = features.names.index("history_len")
    for group in groups_of(splits["val"])[:50]:
        shown = group[0].prefix.split("History:\n", 1)[1].count("\n")
        assert features.matrix(group)[0, column] == shown


@pytest.fixture(scope="module")
def fitted(splits, features):
    data = {split: Split(features.matrix(records), np.array([r.task for r in records]), np.array([r.label for r in records])) for split, records in splits.items()}
    return data, {r.name: r for r in fit_baselines(features.names, data, seed=0)}


def test_reference_models_rank_better_than_chance(fitted):
    data, results = fitted
    assert set(results) == set(NAMES)
    for name, result in results.items():
        metrics = result.metrics(data, "test")
        assert set(metrics["auc"]) == {"like", "love", "next"} and set(metrics["val_auc"]) == {"like", "love", "next"}, name
    learned = results["logistic_regression"].metrics(data, "test")
    assert learned["val_auc_mean"] > 0.6 and learned["auc_mean"] > 0.6
    assert results["logistic_regression"].params > 0 and results["gradient_boosting"].params > 0
    # popularity so far is what drives "next": items that exist but few watch are rarely next
    assert results["popularity"].metrics(data, "test")["auc"]["next"] > 0.7


def test_hyperparameters_are_chosen_on_val_not_test(fitted, features):
    """Scrambling the test labels changes nothing the fit chose or scored."""
    data, results = fitted
    scrambled = dict(data)
    rng = np.random.default_rng(1)
    scrambled["test"] = Split(data["test"].features, data["test"].tasks, rng.permutation(data["test"].labels))
    again = {r.name: r for r in fit_baselines(features.names, scrambled, seed=0)}
    for name in NAMES:
        assert again[name].chosen == results[name].chosen, name
        np.testing.assert_array_equal(again[name].scores["test"], results[name].scores["test"])
    auc = auc_per_task(data["val"].tasks, data["val"].labels, results["logistic_regression"].scores["val"])
    assert {task: chosen["val_auc"] for task, chosen in results["logistic_regression"].chosen.items()} == pytest.approx(auc)
