"""Non-LM reference models, fitted on the train records and scored on the evaluation records.

Every run answers "does the LM earn its cost?" against four of them, fitted per task on
the decision-time features of :mod:`recslm.baselines.features`:

- ``popularity``: the item's rating count so far (no fitting);
- ``item_mean``: the item's mean rating so far, shrunk to the global mean by five
  pseudo-ratings (no fitting);
- ``logistic_regression``: standardized features, L2 strength chosen on val AUC;
- ``gradient_boosting``: scikit-learn's histogram gradient-boosted trees, learning rate
  chosen on val AUC, rounds by early stopping on a seeded slice of train.

Hyperparameters are chosen on the validation split only; the test split is scored once,
with the chosen model. AUC is computed exactly as for the LMs (pooled per task).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recslm.evaluate.metrics import auc_per_task, mean_auc

NAMES = ("popularity", "item_mean", "logistic_regression", "gradient_boosting")
LOGISTIC_C = (0.01, 0.1, 1.0)
BOOSTING_RATES = (0.05, 0.15)


@dataclass
class Split:
    """Feature rows of one split with their tasks and labels."""

    features: np.ndarray
    tasks: np.ndarray
    labels: np.ndarray

    def of_task(self, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask = self.tasks == task
        return mask, self.features[mask], self.labels[mask]


@dataclass
class BaselineResult:
    """One reference model's scores per split and what was chosen for each task."""

    name: str
    scores: dict[str, np.ndarray]
    params: int = 0  # learned numbers (coefficients or tree nodes), summed over tasks
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)

    def metrics(self, splits: dict[str, Split], report: str) -> dict[str, Any]:
        """Test-side (``report`` split) AUC as ``auc``/``auc_mean`` and the val AUC beside it."""
        out: dict[str, Any] = {"params": self.params, "chosen": self.chosen}
        for split, prefix in (("val", "val_"), (report, "")):
            auc = auc_per_task(splits[split].tasks, splits[split].labels, self.scores[split])
            out[f"{prefix}auc"], out[f"{prefix}auc_mean"] = auc, mean_auc(auc)
        return out


def _column(names: Sequence[str], name: str) -> int:
    return list(names).index(name)


def _lookup(names: Sequence[str], column: str, splits: dict[str, Split], name: str) -> BaselineResult:
    index = _column(names, column)
    return BaselineResult(name, {split: s.features[:, index].astype(np.float64) for split, s in splits.items()})


def _per_task(splits: dict[str, Split], fit: Callable[[np.ndarray, np.ndarray, Any], Any], grid: Sequence[Any],
              score: Callable[[Any, np.ndarray], np.ndarray], size: Callable[[Any], int], name: str, label: str) -> BaselineResult:  # fmt: skip
    """Fit one model per task for each grid value, keep the value with the best val AUC of that task."""
    from sklearn.metrics import roc_auc_score

    result = BaselineResult(name, {split: np.zeros(len(s.labels)) for split, s in splits.items()})
    for task in sorted(set(splits["train"].tasks.tolist())):
        _, x, y = splits["train"].of_task(task)
        val_mask, val_x, val_y = splits["val"].of_task(task)
        if len(np.unique(y)) < 2 or len(np.unique(val_y)) < 2:
            continue  # a task without both labels has no AUC to fit for or choose on
        best = max(((roc_auc_score(val_y, score(model, val_x)), value, model) for value in grid for model in [fit(x, y, value)]), key=lambda t: t[0])
        val_auc, value, model = best
        result.chosen[task] = {label: value, "val_auc": float(val_auc)}
        result.params += size(model)
        for split, s in splits.items():
            mask, features, _ = s.of_task(task)
            if mask.any():
                result.scores[split][mask] = score(model, features)
    return result


def logistic_regression(splits: dict[str, Split], seed: int) -> BaselineResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)).fit(x, y)

    return _per_task(splits, fit, LOGISTIC_C, lambda m, x: m.decision_function(x), lambda m: int(m[-1].coef_.size + m[-1].intercept_.size), "logistic_regression", "C")


def gradient_boosting(splits: dict[str, Split], seed: int) -> BaselineResult:
    from sklearn.ensemble import HistGradientBoostingClassifier

    def fit(x: np.ndarray, y: np.ndarray, rate: float) -> Any:
        model = HistGradientBoostingClassifier(learning_rate=rate, max_iter=400, max_leaf_nodes=31, early_stopping=True,
                                               validation_fraction=0.1, n_iter_no_change=20, random_state=seed)  # fmt: skip
        return model.fit(x, y)

    def nodes(model: Any) -> int:
        return int(sum(len(predictor.nodes) for stage in model._predictors for predictor in stage))

    return _per_task(splits, fit, BOOSTING_RATES, lambda m, x: m.decision_function(x), nodes, "gradient_boosting", "learning_rate")


def fit_baselines(names: Sequence[str], splits: dict[str, Split], seed: int) -> list[BaselineResult]:
    """All four reference models on ``splits`` (train, val and the reported split)."""
    return [
        _lookup(names, "item_log_count", splits, "popularity"),
        _lookup(names, "item_smoothed_mean", splits, "item_mean"),
        logistic_regression(splits, seed),
        gradient_boosting(splits, seed),
    ]
