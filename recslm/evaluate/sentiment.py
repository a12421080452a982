"""The generative task's task metric: does the written review say what the rating says?

A reviews prompt states the rating (1-5 stars). A model that learned the task writes a
positive review for 4-5 stars and a critical one for 1-3; a model that only learned the
language writes the data set's most common review whatever the prompt says. The metric:
a sentiment classifier (TF-IDF word uni- and bigrams, logistic regression; scikit-learn)
fitted on the run's *training* reviews labels each generated review positive or not, and
we report the **balanced accuracy** of that label against the rating's (rating >= 4).

Why this and not ROUGE-L against the reference: a review is one of many valid texts, so
overlap with the one the customer wrote rewards copying frequent phrases, not following
the prompt; agreement with the stated rating measures the conditioning the prompt asks
for. Why balanced: about three reviews in four are positive, so plain accuracy gives a
model that always writes a positive review 0.75; balanced accuracy gives it 0.5.
The classifier's balanced accuracy on the customers' own reviews of the same prompts is
reported beside it (``*_reference``). It is not a ceiling: real reviews are more mixed than
greedy, prototypical ones (a 3-star review that praises the fabric), so a model that
follows the rating can score above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline

from recslm.data.reviews import GenerationRecord
from recslm.errors import DataError

POSITIVE_FROM = 4  # stars: 4 and 5 are positive


def positive(rating: int) -> int:
    return int(rating >= POSITIVE_FROM)


def rated(records: Sequence[GenerationRecord], where: str) -> list[GenerationRecord]:
    """The records; an unrated one is an error naming ``where`` (the metric needs the stated rating)."""
    missing = sum(1 for r in records if r.rating is None)
    if missing:
        raise DataError(f"{where}: {missing} records have no rating; the sentiment metric compares a review with its rating")
    return list(records)


@dataclass
class SentimentJudge:
    """The fitted classifier: ``agreement(texts, ratings)`` is the balanced accuracy of its labels."""

    pipeline: Pipeline

    @classmethod
    def fit(cls, train: Sequence[GenerationRecord]) -> SentimentJudge:
        records = rated(train, "train split")
        labels = np.array([positive(r.rating) for r in records])
        if len(set(labels)) < 2:
            raise DataError("train split: every review has the same sentiment class; the sentiment judge needs both")
        pipeline = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000),
        )
        pipeline.fit([r.response for r in records], labels)
        return cls(pipeline)

    def agreement(self, texts: Sequence[str], ratings: Sequence[int]) -> float:
        """Balanced accuracy of the judged sentiment of ``texts`` against their ratings' (NaN if one class is absent)."""
        truth = np.array([positive(r) for r in ratings])
        if len(set(truth)) < 2:
            return float("nan")
        return float(balanced_accuracy_score(truth, self.pipeline.predict(list(texts))))
