"""MovieLens 100K as ranking tasks, split in time.

Reading: the bundled parquet copy (default), a folder with the same parquet files, or
the original GroupLens ``ml-100k`` layout (``u.data``, ``u.item``, ``u.user``).

Tasks (one *group* = one member, one task, one snapshot in time; all of a group's
candidates share its prefix):
- *like*: the member's next k rated items; label = rating >= 4.
- *love*: the same candidates; label = rating == 5.
- *next*: the item the member actually rated next (label 1) and k-1 items the member
  never rated, sampled uniformly from items rated by anyone before the validation cutoff
  (label 0), in a seeded random order.

Split in time with two global cutoffs, T1 and T2 (quantiles of all rating times):
train candidates are before T1, validation candidates in [T1, T2), test at or after T2.
Training takes a snapshot every ``train_stride`` interactions of a member; validation
and test take one at the member's first interaction in their window and then every
``eval_stride`` interactions (a later snapshot's history may include earlier
interactions of the same window: they are in the past of its candidates). A
snapshot's history is the member's last ``history_len`` ratings strictly before the
earliest candidate's time, so no future interaction ever appears in a prefix (ties in
time count as future).

Randomness (negatives, subsampling) comes from generators seeded by (seed, member,
position), so output does not depend on iteration order and is identical for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recslm.config import DataConfig
from recslm.data.prompts import HistoryItem, Item, MemberProfile, format_candidate, format_prefix
from recslm.data.records import SPLITS, RankingRecord
from recslm.errors import DataError

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
PARQUET_FILES = ("MovieLens100k_data.parquet", "MovieLens100k_items.parquet", "MovieLens100k_users.parquet")
ORIGINAL_FILES = ("u.data", "u.item", "u.user")


@dataclass
class MovieLens:
    ratings: pd.DataFrame  # user_id, movie_id, rating, timestamp
    items: pd.DataFrame  # movie_id, title, genres (list of genre names)
    users: pd.DataFrame  # user_id, age, gender, occupation


def bundled_path() -> Path:
    """The copy shipped inside the package (with its terms in README.md)."""
    return Path(str(resources.files("recslm.data") / "bundled" / "movielens-100k"))


def _genre_lists(flags: pd.DataFrame) -> list[list[str]]:
    values = flags[GENRES].to_numpy().astype(bool)
    return [[g for g, on in zip(GENRES, row) if on and g != "unknown"] for row in values]


def load_movielens(path: Path | None = None) -> MovieLens:
    """Read MovieLens 100K from the parquet layout or the original ml-100k layout."""
    folder = Path(path) if path is not None else bundled_path()
    if all((folder / f).is_file() for f in PARQUET_FILES):
        ratings = pd.read_parquet(folder / PARQUET_FILES[0])
        raw_items = pd.read_parquet(folder / PARQUET_FILES[1]).rename(columns={"movie_title": "title"})
        users = pd.read_parquet(folder / PARQUET_FILES[2])
    elif all((folder / f).is_file() for f in ORIGINAL_FILES):
        ratings = pd.read_csv(folder / "u.data", sep="\t", names=["user_id", "movie_id", "rating", "timestamp"])
        raw_items = pd.read_csv(
            folder / "u.item", sep="|", encoding="latin-1", header=None,
            names=["movie_id", "title", "release_date", "video_release_date", "IMDb_URL", *GENRES],
        )
        users = pd.read_csv(folder / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip_code"])
    else:
        raise DataError(
            f"{folder}: no MovieLens 100K here; expected the parquet files {', '.join(PARQUET_FILES)} "
            f"or the original ml-100k files {', '.join(ORIGINAL_FILES)}"
        )
    missing = {"user_id", "movie_id", "rating", "timestamp"} - set(ratings.columns)
    if missing:
        raise DataError(f"{folder}: ratings lack columns {sorted(missing)}")
    items = pd.DataFrame({"movie_id": raw_items["movie_id"].astype(int), "title": raw_items["title"].astype(str), "genres": _genre_lists(raw_items)})
    return MovieLens(
        ratings=ratings[["user_id", "movie_id", "rating", "timestamp"]].astype("int64").reset_index(drop=True),
        items=items,
        users=users[["user_id", "age", "gender", "occupation"]].assign(
            user_id=lambda d: d.user_id.astype("int64"), age=lambda d: d.age.astype("int64"),
            gender=lambda d: d.gender.astype(str), occupation=lambda d: d.occupation.astype(str),
        ),
    )


@dataclass
class _Member:
    user_id: int
    profile: MemberProfile
    ts: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray
    unrated_pool: np.ndarray


def time_cutoffs(ratings: pd.DataFrame, cfg: DataConfig) -> tuple[int, int]:
    """(T1, T2): validation and test start times, as quantiles of all rating times."""
    ts = ratings["timestamp"].to_numpy()
    return int(np.quantile(ts, cfg.val_start_quantile)), int(np.quantile(ts, cfg.test_start_quantile))


def build_ranking_splits(ml: MovieLens, cfg: DataConfig) -> dict[str, list[RankingRecord]]:
    """Ranking records for train, val and test (see the module docstring for the semantics)."""
    t1, t2 = time_cutoffs(ml.ratings, cfg)
    items = {int(m): Item(t, tuple(g)) for m, t, g in zip(ml.items.movie_id, ml.items.title, ml.items.genres)}
    profiles = {int(u): MemberProfile(int(a), str(g), str(o)) for u, a, g, o in ml.users.itertuples(index=False)}
    pool = np.unique(ml.ratings.loc[ml.ratings.timestamp < t1, "movie_id"].to_numpy())
    ratings = ml.ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="stable")

    members: list[_Member] = []
    for user_id, frame in ratings.groupby("user_id", sort=True):
        movies = frame.movie_id.to_numpy()
        members.append(
            _Member(int(user_id), profiles[int(user_id)], frame.timestamp.to_numpy(), movies, frame.rating.to_numpy(), np.setdiff1d(pool, movies))
        )

    eval_members = _eval_member_subset(members, t1, t2, cfg)
    splits: dict[str, list[RankingRecord]] = {split: [] for split in SPLITS}
    train_groups: list[list[RankingRecord]] = []
    for member in members:
        for position in _train_positions(member, t1, cfg):
            train_groups.extend(_groups_at(member, position, None, t1, items, cfg))
        if member.user_id in eval_members:
            for split, (lo, hi) in (("val", (t1, t2)), ("test", (t2, None))):
                for position in _window_positions(member.ts, lo, hi, cfg.eval_stride):
                    splits[split].extend(r for g in _groups_at(member, position, lo, hi, items, cfg) for r in g)
    if cfg.max_train_groups is not None and len(train_groups) > cfg.max_train_groups:
        keep = np.sort(np.random.default_rng([cfg.seed, 1]).choice(len(train_groups), cfg.max_train_groups, replace=False))
        train_groups = [train_groups[i] for i in keep]
    splits["train"] = [r for g in train_groups for r in g]
    for split, records in splits.items():
        if not records:
            raise DataError(f"MovieLens: the {split} split is empty with this data config (check the quantiles, min_history and caps)")
    return splits


def _window_positions(ts: np.ndarray, lo: int, hi: int | None, stride: int) -> range:
    """Snapshot positions of one member inside [lo, hi): the first interaction there, then every ``stride``."""
    start = int(np.searchsorted(ts, lo, side="left"))
    end = len(ts) if hi is None else int(np.searchsorted(ts, hi, side="left"))
    return range(start, end, stride)


def _train_positions(member: _Member, t1: int, cfg: DataConfig) -> range:
    end = int(np.searchsorted(member.ts, t1, side="left"))  # first interaction at/after T1
    return range(cfg.min_history, end, cfg.train_stride)


def _eval_member_subset(members: list[_Member], t1: int, t2: int, cfg: DataConfig) -> set[int]:
    eligible = sorted(m.user_id for m in members if m.ts[-1] >= t1)
    if cfg.max_eval_members is None or len(eligible) <= cfg.max_eval_members:
        return set(eligible)
    # prefer members with test interactions, so the test split keeps its size
    with_test = [u for u in eligible if next(m for m in members if m.user_id == u).ts[-1] >= t2]
    rng = np.random.default_rng([cfg.seed, 2])
    chosen = list(rng.choice(with_test, min(len(with_test), cfg.max_eval_members), replace=False))
    rest = [u for u in eligible if u not in set(chosen)]
    if len(chosen) < cfg.max_eval_members and rest:
        chosen += list(rng.choice(rest, cfg.max_eval_members - len(chosen), replace=False))
    return {int(u) for u in chosen}


def _groups_at(
    member: _Member, position: int, lo: int | None, hi: int | None, items: dict[int, Item], cfg: DataConfig
) -> list[list[RankingRecord]]:
    """The groups (one per task) of one member snapshot whose first candidate is ``position``."""
    ts, movies = member.ts, member.movies
    history_end = int(np.searchsorted(ts, ts[position], side="left"))  # strictly earlier than the first candidate
    if history_end < cfg.min_history:
        return []
    start = max(0, history_end - cfg.history_len)
    history = [HistoryItem(items[int(movies[j])], int(member.ratings[j])) for j in range(start, history_end)]
    history_max_ts = int(ts[history_end - 1])
    window = [j for j in range(position, min(position + cfg.candidates_per_member, len(ts))) if hi is None or ts[j] < hi]
    groups = []
    for task in cfg.tasks:
        prefix = format_prefix(task, member.profile, history)
        if task == "next":
            cands = _next_candidates(member, position, cfg)
        else:
            threshold = 4 if task == "like" else 5
            cands = [(int(movies[j]), int(member.ratings[j] >= threshold), int(ts[j])) for j in window]
        if not cands:
            continue
        groups.append(
            [
                RankingRecord.model_construct(
                    member_id=str(member.user_id), task=task, prefix=prefix, candidate=format_candidate(items[movie]),
                    label=label, item_id=str(movie), ts=when, history_max_ts=history_max_ts,
                )
                for movie, label, when in cands
            ]
        )
    return groups


def _next_candidates(member: _Member, position: int, cfg: DataConfig) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng([cfg.seed, member.user_id, position])
    count = min(cfg.candidates_per_member - 1, len(member.unrated_pool))
    negatives = rng.choice(member.unrated_pool, count, replace=False)
    when = int(member.ts[position])
    cands = [(int(member.movies[position]), 1, when)] + [(int(m), 0, when) for m in negatives]
    return [cands[i] for i in rng.permutation(len(cands))]


def summarize(splits: dict[str, list[RankingRecord]]) -> dict[str, Any]:
    """Per split and task: groups, records and positive rate (for metrics.json and the CLI)."""
    out: dict[str, Any] = {}
    for split, records in splits.items():
        per_task: dict[str, Any] = {}
        for task in sorted({r.task for r in records}):
            rows = [r for r in records if r.task == task]
            per_task[task] = {
                "groups": len({(r.member_id, r.prefix) for r in rows}),
                "records": len(rows),
                "positive_rate": float(np.mean([r.label for r in rows])),
            }
        out[split] = per_task
    return out
