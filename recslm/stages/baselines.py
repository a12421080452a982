"""The baselines stage: non-LM reference models fitted on the run's train records and scored on
the same val and reported records as the LMs (popularity, item mean, logistic regression,
gradient-boosted trees), so every run answers "does the LM earn its cost?"."""

from __future__ import annotations

from typing import Any

from recslm.stages.base import Stage, StageContext
from recslm.store import ArtifactRef

SKIPPED_SOURCE = "the records source carries no event log (ratings before each decision time) to compute features from"


def key(config: Any) -> Any:
    """The records are the data input; features follow the prompt's history length."""
    return {"history_len": config.data.history_len, "split": config.evaluate.split, "seed": config.run.seed, "source": config.data.source}


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from recslm.baselines.features import DecisionTimeFeatures
    from recslm.baselines.models import Split, fit_baselines
    from recslm.data.build import load_split
    from recslm.data.movielens import load_movielens

    if config.data.source != "movielens":
        return {"skipped": SKIPPED_SOURCE, "models": {}}
    features = DecisionTimeFeatures(load_movielens(config.data.path), config.data.history_len)
    splits: dict[str, Split] = {}
    for split in dict.fromkeys(("train", "val", config.evaluate.split)):
        records = load_split(inputs["data"].path, split)
        splits[split] = Split(features.matrix(records), np.array([r.task for r in records]), np.array([r.label for r in records]))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(config.runtime.threads):  # scikit-learn's OpenMP pools follow runtime.threads too
        results = fit_baselines(features.names, splits, config.run.seed)
    for split in dict.fromkeys(("val", config.evaluate.split)):
        scores = pd.DataFrame({"task": splits[split].tasks, "label": splits[split].labels, **{r.name: r.scores[split] for r in results}})
        scores.to_parquet(ctx.out / f"scores-{split}.parquet", index=False)
    return {
        "models": {r.name: r.metrics(splits, config.evaluate.split) for r in results},
        "features": features.names,
        "split": config.evaluate.split,
        "train_examples": int(len(splits["train"].labels)),
    }


STAGE = Stage("baselines", key, body)
