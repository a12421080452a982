"""Decision-time features of ranking records, for the non-LM reference models.

A record asks about one member and one item at a decision time t: the time of its
group's first candidate (what the prompt's history and item stats are cut at). Every
feature here is computed from events strictly before t: the item's ratings so far
(count, recent count, mean, age since its first rating), the global mean rating so far,
the member's profile, and the member's history as the prompt shows it (the last
``history_len`` ratings before t): its mean rating, its genre mix, and how the member
rated items sharing the candidate's genres. So a model fitted on these sees at most
what the LM's prompt prints, never a rating at or after t; ``tests/unit`` proves it by
recomputing features from an event log truncated at each sampled record's t.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from recslm.data.movielens import GENRES, MovieLens
from recslm.data.records import RankingRecord
from recslm.errors import DataError

RECENT_DAYS = 30
_DAY = 86_400


@dataclass(frozen=True)
class _Series:
    """One sorted event series: times and the running sum of ratings (for counts and means before t)."""

    ts: np.ndarray
    sums: np.ndarray  # sums[i] = sum of the first i ratings

    @classmethod
    def of(cls, ts: np.ndarray, ratings: np.ndarray) -> _Series:
        order = np.argsort(ts, kind="stable")
        return cls(ts[order], np.concatenate([[0], np.cumsum(ratings[order])]).astype(np.float64))

    def before(self, when: int) -> tuple[int, float]:
        """(count, sum) of the events strictly before ``when``."""
        n = int(np.searchsorted(self.ts, when, side="left"))
        return n, float(self.sums[n])


def decision_groups(records: Sequence[RankingRecord]) -> Iterator[tuple[list[RankingRecord], int]]:
    """Each decision (consecutive records with one member, task and prefix) with its time: the
    earliest ``ts`` among its candidates, the time the prompt's item stats were computed at."""
    for _, group in groupby(records, key=lambda r: (r.member_id, r.task, r.prefix)):
        group = list(group)
        if any(r.ts is None or r.item_id is None for r in group):
            raise DataError("baselines: records need item_id and ts (the decision time) to compute features")
        yield group, min(int(r.ts) for r in group)  # type: ignore[arg-type]


class DecisionTimeFeatures:
    """Feature rows for records, computed from a MovieLens event log (see the module docstring)."""

    def __init__(self, ml: MovieLens, history_len: int):
        ratings = ml.ratings
        self.history_len = history_len
        self._all = _Series.of(ratings.timestamp.to_numpy(), ratings.rating.to_numpy())
        self._items = {
            int(movie): _Series.of(frame.timestamp.to_numpy(), frame.rating.to_numpy())
            for movie, frame in ratings.groupby("movie_id", sort=False)
        }
        self._members: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for user, frame in ratings.groupby("user_id", sort=False):
            frame = frame.sort_values(["timestamp", "movie_id"], kind="stable")  # the builder's history order
            self._members[int(user)] = (frame.timestamp.to_numpy(), frame.movie_id.to_numpy(), frame.rating.to_numpy())
        self._genres = {int(m): np.array([g in set(gs) for g in GENRES], dtype=np.float64) for m, gs in zip(ml.items.movie_id, ml.items.genres)}
        occupations = sorted(set(ml.users.occupation))
        self._profiles = {
            int(u): np.concatenate([[float(a), float(g == "M")], np.eye(len(occupations))[occupations.index(o)]])
            for u, a, g, o in zip(ml.users.user_id, ml.users.age, ml.users.gender, ml.users.occupation)
        }
        self.names: list[str] = [
            "item_log_count", "item_recent_log_count", "item_mean", "item_smoothed_mean", "item_age_days", "global_mean",
            "member_age", "member_male", *[f"occupation={o}" for o in occupations],
            "history_len", "history_mean", "genre_affinity_mean", "genre_affinity_max", "history_mean_same_genre", "history_same_genre_count",
            *[f"genre={g}" for g in GENRES],
        ]  # fmt: skip

    def matrix(self, records: Sequence[RankingRecord]) -> np.ndarray:
        """One row per record, in order. Groups (consecutive records with one member, task and
        prefix) share their decision time: the earliest ``ts`` among their candidates."""
        rows: list[np.ndarray] = []
        for group, when in decision_groups(records):
            rows += self.group_rows(int(group[0].member_id), [int(r.item_id) for r in group], when)  # type: ignore[arg-type]
        return np.vstack(rows) if rows else np.zeros((0, len(self.names)))

    def group_rows(self, member: int, items: Sequence[int], when: int) -> list[np.ndarray]:
        """Feature rows of one member's candidates at decision time ``when``."""
        try:
            ts, movies, ratings = self._members[member]
            profile = self._profiles[member]
        except KeyError:
            raise DataError(f"baselines: member {member} is not in the MovieLens tables") from None
        n_seen = int(np.searchsorted(ts, when, side="left"))
        lo = max(0, n_seen - self.history_len)
        shown_movies, shown_ratings = movies[lo:n_seen], ratings[lo:n_seen].astype(np.float64)
        shown_genres = np.array([self._genres[int(m)] for m in shown_movies]).reshape(len(shown_movies), len(GENRES))
        history_mean = float(shown_ratings.mean()) if len(shown_ratings) else 0.0
        genre_share = shown_genres.mean(axis=0) if len(shown_movies) else np.zeros(len(GENRES))
        count_all, sum_all = self._all.before(when)
        global_mean = sum_all / count_all if count_all else 0.0
        member_part = np.concatenate([profile, [len(shown_movies), history_mean]])
        return [self._item_row(item, when, global_mean, member_part, shown_genres, shown_ratings, genre_share, history_mean) for item in items]

    def _item_row(self, item: int, when: int, global_mean: float, member_part: np.ndarray, shown_genres: np.ndarray,
                  shown_ratings: np.ndarray, genre_share: np.ndarray, history_mean: float) -> np.ndarray:  # fmt: skip
        series = self._items.get(item)
        genres = self._genres.get(item)
        if genres is None:
            raise DataError(f"baselines: item {item} is not in the MovieLens items table")
        if series is None:
            count, total, recent, age_days = 0, 0.0, 0, 0.0
        else:
            count, total = series.before(when)
            recent = count - series.before(when - RECENT_DAYS * _DAY)[0]
            age_days = (when - float(series.ts[0])) / _DAY if count else 0.0
        mean = total / count if count else 0.0
        smoothed = (total + 5.0 * global_mean) / (count + 5.0)  # five pseudo-ratings at the global mean so far
        mine = genres > 0
        affinity = genre_share[mine] if mine.any() else np.zeros(1)
        same = (shown_genres[:, mine].sum(axis=1) > 0) if len(shown_ratings) and mine.any() else np.zeros(len(shown_ratings), dtype=bool)
        same_mean = float(shown_ratings[same].mean()) if same.any() else history_mean
        return np.concatenate([
            [np.log1p(count), np.log1p(recent), mean, smoothed, age_days, global_mean],
            member_part,
            [float(affinity.mean()), float(affinity.max()), same_mean, float(same.sum())],
            genres,
        ])  # fmt: skip
