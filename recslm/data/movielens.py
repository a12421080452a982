"""MovieLens 100K as ranking tasks, split in time.

Reading (:func:`load_movielens`): the bundled parquet copy (default), a folder with the
same parquet files, or the original GroupLens ``ml-100k`` layout (``u.data``,
``u.item``, ``u.user``), so users can point recslm at their own download.

Building (:func:`build_ranking_splits`). A *group* is one member, one task, one
*snapshot* in time: a shared prefix (instruction, profile, the member's last
``history_len`` ratings before the snapshot, oldest first) and up to
``k = candidates_per_member`` candidates. All candidates of a group have the same
prefix string, which is what prefix caching exploits. Tasks:

- *like*: the member's next up-to-k rated items from the snapshot on, sorted by
  (timestamp, movie_id) and inside the split's time window; label = rating >= 4.
- *love*: the same candidates; label = rating == 5.
- *next*: the item actually rated at the snapshot (label 1) and k-1 negatives (label 0),
  in a seeded random order; the negatives carry the positive's timestamp t. A negative
  is drawn uniformly from the items that *exist at t* (rated by anyone strictly before
  t) and that the member has not rated before t. Nothing at or after t decides which
  items may be negatives: not the member's future ratings (an item the member rates
  next month is a fair negative today) and not whether an item is rated later by
  anyone (an item nobody has rated yet is not in the catalogue, and as a negative it
  would be an easy giveaway: "new" always meant "no"). The same rule holds in every split.
  A group whose catalogue cannot give k-1 negatives (the first hours of the data) is
  left out rather than shown with fewer candidates.

Time split: T1 and T2 are the ``val_start_quantile`` and ``test_start_quantile``
quantiles of all rating times. Train candidates have ts < T1, validation
T1 <= ts < T2, test ts >= T2. Snapshots:

- train: every ``train_stride`` interactions of a member, from interaction
  ``min_history`` on, while the snapshot's interaction is before T1;
- val / test: the member's first interaction in the window, then every
  ``eval_stride`` interactions inside it. The history may hold interactions of earlier
  windows (they are the past), never anything at or after the first candidate's time.

No leakage: many MovieLens ratings share a timestamp (a member rates several movies in
the same second), so a snapshot is moved back to the first interaction of its second:
the history is then exactly the interactions strictly before the first candidate's
time, and two snapshots in the same second collapse into one (otherwise they would
produce two groups with one prefix). A snapshot needs ``min_history`` past ratings.

Item stats (``item_stats``): each candidate also shows the item's rating count and mean
as known strictly before the group's decision time (its first candidate's time), what a
production ranker reads from its feature store; never a rating from that moment on.

Caps: ``max_train_groups`` keeps a seeded random subset of the train groups;
``max_eval_members`` keeps a seeded random subset of members for val and test,
preferring members present in both splits so val and test describe the same people.

Determinism: every random draw comes from a generator seeded by (seed, purpose,
member, snapshot), so the output does not depend on iteration order and the same
config gives identical records. Records are ordered by (member, task, snapshot) with a
group's candidates contiguous; ``item_id``, ``ts`` and ``history_max_ts`` are filled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recslm.config import DataConfig
from recslm.data.prompts import RANK_STYLES, HistoryItem, Item, ItemStats, MemberProfile, format_candidate, format_prefix, taste_match
from recslm.data.records import SPLITS, RankingRecord, gc_paused, records_from_rows
from recslm.errors import DataError

GENRES: list[str] = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
PARQUET_FILES = ("MovieLens100k_data.parquet", "MovieLens100k_items.parquet", "MovieLens100k_users.parquet")
ORIGINAL_FILES = ("u.data", "u.item", "u.user")
RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]
ITEM_COLUMNS = ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *GENRES]
USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
LABEL_THRESHOLDS = {"like": 4, "love": 5}  # label = rating >= threshold

RECENT_S = 30 * 86_400  # "recent" ratings of an item: the 30 days before the decision time

# purposes mixed into the seeds, so draws for different jobs never share a stream
_NEGATIVES, _TRAIN_SUBSAMPLE, _EVAL_MEMBERS = 1, 2, 3


@dataclass
class MovieLens:
    """The three tables, normalized to the columns the builder reads."""

    ratings: pd.DataFrame  # user_id, movie_id, rating, timestamp (int64)
    items: pd.DataFrame  # movie_id (int64), title (str), genres (list of genre names)
    users: pd.DataFrame  # user_id (int64), age (int64), gender (str), occupation (str)


def bundled_path() -> Path:
    """The copy shipped inside the package (with its terms in README.md), wherever recslm is installed."""
    return Path(str(resources.files("recslm.data") / "bundled" / "movielens-100k"))


# --------------------------------------------------------------------------- reading


def _read(file: Path, reader: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Run a pandas reader, turning its exceptions into a DataError that names the file."""
    try:
        return reader()
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{file}: cannot be read ({type(exc).__name__}: {exc})") from exc


def _require(frame: pd.DataFrame, columns: Sequence[str], file: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{file}: missing columns {missing}; expected {list(columns)}")


def _read_parquet_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    frames = []
    for name, columns in zip(PARQUET_FILES, (RATING_COLUMNS, ITEM_COLUMNS[:2] + GENRES, USER_COLUMNS[:4])):
        file = folder / name
        frame = _read(file, lambda file=file: pd.read_parquet(file))
        _require(frame, columns, file)
        frames.append(frame)
    return frames[0], frames[1], frames[2]


def _read_delimited(file: Path, sep: str, names: Sequence[str], **options: Any) -> pd.DataFrame:
    """A header-less GroupLens file with exactly ``len(names)`` columns (pandas would silently shift others)."""
    frame = _read(file, lambda: pd.read_csv(file, sep=sep, header=None, **options))
    if frame.shape[1] != len(names):
        raise DataError(
            f"{file}: expected {len(names)} {sep!r}-separated columns ({', '.join(names)}), found {frame.shape[1]}"
        )
    frame.columns = list(names)
    return frame


def _read_original_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    data, item, user = (folder / name for name in ORIGINAL_FILES)
    ratings = _read_delimited(data, "\t", RATING_COLUMNS)
    items = _read_delimited(item, "|", ITEM_COLUMNS, encoding="latin-1", keep_default_na=False)
    users = _read_delimited(user, "|", USER_COLUMNS, dtype=str, keep_default_na=False)
    return ratings, items, users


def _int_columns(frame: pd.DataFrame, columns: Sequence[str], file: Path) -> pd.DataFrame:
    out = frame[list(columns)].copy()
    for column in columns:
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            rows = (np.flatnonzero(bad.to_numpy())[:5] + 1).tolist()
            raise DataError(f"{file}: column {column}: expected integers, {int(bad.sum())} rows are not (rows {rows})")
        out[column] = values.astype("int64")
    return out


def _genre_lists(raw_items: pd.DataFrame, file: Path) -> list[list[str]]:
    """Genre flag columns (0/1, in the GroupLens order) to lists of genre names."""
    flags = _int_columns(raw_items, GENRES, file).to_numpy()
    if not np.isin(flags, (0, 1)).all():
        column = GENRES[int(np.flatnonzero(~np.isin(flags, (0, 1)).all(axis=0))[0])]
        raise DataError(f"{file}: genre column {column!r}: expected flags 0 or 1")
    return [[g for g, on in zip(GENRES, row) if on] for row in flags.astype(bool)]


def load_movielens(path: Path | None = None) -> MovieLens:
    """Read MovieLens 100K from the parquet layout or the original ml-100k layout (None = the bundled copy)."""
    folder = Path(path) if path is not None else bundled_path()
    if all((folder / f).is_file() for f in PARQUET_FILES):
        files = [folder / f for f in PARQUET_FILES]
        raw_ratings, raw_items, raw_users = _read_parquet_layout(folder)
    elif all((folder / f).is_file() for f in ORIGINAL_FILES):
        files = [folder / f for f in ORIGINAL_FILES]
        raw_ratings, raw_items, raw_users = _read_original_layout(folder)
    else:
        where = "folder not found" if not folder.is_dir() else "no MovieLens 100K here"
        raise DataError(
            f"{folder}: {where}; expected the parquet files {', '.join(PARQUET_FILES)} "
            f"or the original ml-100k files {', '.join(ORIGINAL_FILES)}"
        )
    items = pd.DataFrame(
        {
            "movie_id": _int_columns(raw_items, ["movie_id"], files[1])["movie_id"],
            "title": raw_items["movie_title"].fillna("").astype(str).to_numpy(),
            "genres": _genre_lists(raw_items, files[1]),
        }
    )
    users = _int_columns(raw_users, ["user_id", "age"], files[2]).assign(
        gender=raw_users["gender"].fillna("").astype(str).to_numpy(),
        occupation=raw_users["occupation"].fillna("").astype(str).to_numpy(),
    )
    ml = MovieLens(
        ratings=_int_columns(raw_ratings, RATING_COLUMNS, files[0]).reset_index(drop=True),
        items=items.reset_index(drop=True),
        users=users.reset_index(drop=True),
    )
    check_ids(ml, files)
    return ml


def check_ids(ml: MovieLens, files: Sequence[Path | str] = ("ratings", "items", "users")) -> None:
    """Every rating must point at a known member and item, and ids must be unique (else prompts lie)."""
    ratings_file, items_file, users_file = files
    for frame, column, file in ((ml.items, "movie_id", items_file), (ml.users, "user_id", users_file)):
        dupes = frame[column][frame[column].duplicated()].unique()[:5].tolist()
        if dupes:
            raise DataError(f"{file}: duplicate {column} values {dupes}")
    for column, known, file in (("movie_id", ml.items.movie_id, items_file), ("user_id", ml.users.user_id, users_file)):
        unknown = ~ml.ratings[column].isin(known)
        if unknown.any():
            examples = ml.ratings.loc[unknown, column].unique()[:5].tolist()
            raise DataError(f"{ratings_file}: {int(unknown.sum())} ratings have a {column} missing from {file} (e.g. {examples})")


# --------------------------------------------------------------------------- building


def time_cutoffs(ratings: pd.DataFrame, cfg: DataConfig) -> tuple[int, int]:
    """(T1, T2): validation and test start times, as quantiles of all rating times (rounded down to a second)."""
    ts = ratings["timestamp"].to_numpy()
    if ts.size == 0:
        raise DataError("MovieLens: no ratings to split")
    return int(np.quantile(ts, cfg.val_start_quantile)), int(np.quantile(ts, cfg.test_start_quantile))


def _rng(*keys: int) -> np.random.Generator:
    """A generator seeded by integer keys of any sign (numpy seeds must be non-negative)."""
    words: list[int] = []
    for key in keys:
        words += [int(key < 0), abs(int(key))]
    return np.random.default_rng(words)


@dataclass
class _Member:
    """One member's interactions sorted by (timestamp, movie_id), as arrays (for searches) and lists (for texts)."""

    user_id: int
    profile: MemberProfile
    ts: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray

    def __post_init__(self) -> None:
        # plain lists: per-item Python work on numpy scalars is several times slower
        self.movie_list: list[int] = self.movies.tolist()
        self.rating_list: list[int] = self.ratings.tolist()
        self.ts_list: list[int] = self.ts.tolist()

    def index_of_time(self, when: int | None) -> int:
        """Number of interactions strictly before ``when`` (None = all of them)."""
        return len(self.ts) if when is None else int(np.searchsorted(self.ts, when, side="left"))



def _members(ml: MovieLens) -> list[_Member]:
    """Split the ratings per member with one sort (no per-row Python)."""
    r = ml.ratings
    user, movie, rating, ts = (r[c].to_numpy() for c in RATING_COLUMNS)
    order = np.lexsort((movie, ts, user))
    user, movie, ts, rating = user[order], movie[order], ts[order], rating[order]
    bounds = np.flatnonzero(np.diff(user)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(user)]
    profiles = {
        int(u): MemberProfile(int(a), g, o) for u, a, g, o in zip(ml.users.user_id, ml.users.age, ml.users.gender, ml.users.occupation)
    }
    return [
        _Member(int(user[s]), profiles[int(user[s])], ts[s:e], movie[s:e], rating[s:e]) for s, e in zip(starts, ends) if e > s
    ]


def _snapshots(member: _Member, first: int, stop: int, stride: int, min_history: int) -> list[int]:
    """Snapshot positions every ``stride`` in [first, stop), each moved back to the first interaction of its
    second (so the history ends strictly before the first candidate), deduplicated, with enough history."""
    if first >= stop:
        return []
    positions = np.arange(first, stop, stride)
    starts = np.searchsorted(member.ts, member.ts[positions], side="left").tolist()  # non-decreasing
    return [s for i, s in enumerate(starts) if s >= min_history and (i == 0 or s != starts[i - 1])]


class Catalogue:
    """Which items exist at a time t: those rated by anyone strictly before t.

    Items are kept ordered by their first rating time, so the catalogue at t is a prefix
    of one array (found by binary search) and sampling from it needs no per-t set.
    """

    def __init__(self, ratings: pd.DataFrame):
        first = ratings.groupby("movie_id", sort=True).timestamp.min()
        order = np.lexsort((first.index.to_numpy(), first.to_numpy()))
        self.items: np.ndarray = first.index.to_numpy()[order]
        self.first_ts: np.ndarray = first.to_numpy()[order]
        self._first_of: dict[int, int] = dict(zip(self.items.tolist(), self.first_ts.tolist()))

    def size_at(self, when: int) -> int:
        """How many items exist at ``when`` (the first that many of :attr:`items`)."""
        return int(np.searchsorted(self.first_ts, when, side="left"))

    def sample(self, rng: np.random.Generator, when: int, count: int, excluded: set[int]) -> list[int]:
        """Up to ``count`` distinct items existing at ``when`` and not in ``excluded``, uniformly.

        Rejection sampling: a member has rated a few hundred items at most, so almost every
        draw is kept; when fewer than ``count`` items are allowed, all of them are returned.
        """
        size = self.size_at(when)
        existing = self.items[:size]
        if size - len(excluded) <= count and self._allowed(when, size, excluded) <= count:
            return [m for m in existing.tolist() if m not in excluded]
        chosen: list[int] = []
        taken = set(excluded)
        while len(chosen) < count:
            movie = int(existing[int(rng.integers(size))])
            if movie not in taken:
                taken.add(movie)
                chosen.append(movie)
        return chosen

    def _allowed(self, when: int, size: int, excluded: set[int]) -> int:
        """How many items exist at ``when`` outside ``excluded``."""
        return size - sum(1 for m in excluded if self._first_of.get(m, when) < when)


class ItemHistory:
    """Per item, its ratings in time order, answering "count and mean before time t" in O(log n)."""

    def __init__(self, ratings: pd.DataFrame):
        ordered = ratings.sort_values(["movie_id", "timestamp"], kind="stable")
        self._times: dict[int, np.ndarray] = {}
        self._sums: dict[int, np.ndarray] = {}
        for movie, frame in ordered.groupby("movie_id", sort=False):
            self._times[int(movie)] = frame.timestamp.to_numpy()
            self._sums[int(movie)] = np.concatenate([[0], np.cumsum(frame.rating.to_numpy())])
        # every item's ratings on one sorted axis (item slot, then time), so the counts of all
        # items before a time are one vectorized search: what a rank among items needs
        self._slots = {movie: slot for slot, movie in enumerate(self._times)}
        span = int(ordered.timestamp.max()) + 2 if len(ordered) else 2
        slot_of = ordered.movie_id.map(self._slots).to_numpy(dtype=np.int64)
        self._span, self._axis = span, slot_of * span + ordered.timestamp.to_numpy(dtype=np.int64)
        self._starts = np.searchsorted(self._axis, np.arange(len(self._slots), dtype=np.int64) * span, side="left")
        self._counts_at: tuple[int, np.ndarray] | None = None

    def counts_before(self, when: int) -> np.ndarray:
        """Every item's number of ratings strictly before ``when`` (in slot order); the last answer is kept."""
        if self._counts_at is None or self._counts_at[0] != when:
            query = np.arange(len(self._slots), dtype=np.int64) * self._span + min(max(int(when), 0), self._span - 1)
            self._counts_at = (when, np.searchsorted(self._axis, query, side="left") - self._starts)
        return self._counts_at[1]

    def before(self, movie: int, when: int, recent: bool = False, rank: bool = False) -> ItemStats:
        """Count and mean of the ratings before ``when``; with ``recent``, also those of its last 30
        days; with ``rank``, the share of the items rated before ``when`` that were rated more often."""
        times = self._times.get(movie)
        if times is None:
            return ItemStats(0, 0.0, 0 if recent else None, 1.0 if rank else None)
        n = int(np.searchsorted(times, when, side="left"))
        last_month = n - int(np.searchsorted(times, when - RECENT_S, side="left")) if recent else None
        share = None
        if rank:
            counts = self.counts_before(when)
            rated = int((counts > 0).sum())
            share = float((counts > n).sum() / rated) if rated else 1.0
        return ItemStats(n, float(self._sums[movie][n] / n) if n else 0.0, last_month, share)


@dataclass(frozen=True)
class _Snapshot:
    """Where a member's groups start and where their candidates must end (exclusive index)."""

    member: int  # index into the member list
    start: int
    window_end: int


@dataclass
class _Builder:
    """Shared inputs of group building: config, item texts and the negative pool."""

    cfg: DataConfig
    tasks: list[str]
    items: dict[int, Item]
    candidates: dict[int, str]
    catalogue: Catalogue
    item_history: ItemHistory | None = None

    def candidate(self, movie: int, decided_at: int, history: list[HistoryItem]) -> str:
        """Candidate text; with item stats it depends on the decision time and with the taste match
        on the shown history, else it is cached per item."""
        if self.item_history is None and not self.cfg.candidate_match:
            return self.candidates[movie]
        stats = None
        if self.item_history is not None:
            stats = self.item_history.before(movie, decided_at, recent=self.cfg.item_recent, rank=self.cfg.stats_style in RANK_STYLES)
        item = self.items[movie]
        return format_candidate(item, stats, self.cfg.stats_style, taste_match(item, history) if self.cfg.candidate_match else None)

    def history(self, member: _Member, start: int) -> list[HistoryItem]:
        """The last ``history_len`` ratings before the snapshot, oldest first."""
        lo = max(0, start - self.cfg.history_len)
        return [HistoryItem(self.items[m], r) for m, r in zip(member.movie_list[lo:start], member.rating_list[lo:start])]

    def group(self, member: _Member, snapshot: _Snapshot, task: str, history: list[HistoryItem]) -> list[dict[str, Any]]:
        """The rows of one group: one prefix, the candidates in order."""
        start = snapshot.start
        if task == "next":
            movies, labels, times = self._next_candidates(member, start)
        else:
            stop = min(start + self.cfg.candidates_per_member, snapshot.window_end)
            threshold = LABEL_THRESHOLDS[task]
            movies, times = member.movie_list[start:stop], member.ts_list[start:stop]
            labels = [int(r >= threshold) for r in member.rating_list[start:stop]]
        prefix = format_prefix(task, member.profile, history, summary=self.cfg.member_summary)
        member_id, history_max_ts, decided_at = str(member.user_id), member.ts_list[start - 1], member.ts_list[start]
        return [
            {
                "member_id": member_id, "task": task, "prefix": prefix, "candidate": self.candidate(movie, decided_at, history), "label": label,
                "item_id": str(movie), "ts": when, "history_max_ts": history_max_ts,
            }
            for movie, label, when in zip(movies, labels, times)
        ]

    def records(self, members: list[_Member], plan: list[tuple[_Snapshot, str]], split: str) -> list[RankingRecord]:
        """All records of a plan, building each snapshot's history once for all its tasks."""
        rows: list[dict[str, Any]] = []
        histories: dict[_Snapshot, list[HistoryItem]] = {}
        for snap, task in plan:
            member = members[snap.member]
            if snap not in histories:
                histories[snap] = self.history(member, snap.start)
            rows += self.group(member, snap, task, histories[snap])
        return records_from_rows(rows, f"MovieLens {split} split")

    def _next_candidates(self, member: _Member, start: int) -> tuple[list[int], list[int], list[int]]:
        """The item rated at the snapshot and k-1 negatives existing then and not rated by the member
        before, shuffled; all carry the snapshot's time."""
        rng = _rng(self.cfg.seed, _NEGATIVES, member.user_id, start)
        positive, when = member.movie_list[start], member.ts_list[start]
        negatives = self.catalogue.sample(rng, when, self.cfg.candidates_per_member - 1, {positive, *member.movie_list[:start]})
        if len(negatives) < self.cfg.candidates_per_member - 1:
            return [], [], []  # the catalogue is still too small at t (the first hours of the data)
        movies = [positive] + negatives
        labels = [1] + [0] * len(negatives)
        order = rng.permutation(len(movies)).tolist()
        return [movies[i] for i in order], [labels[i] for i in order], [when] * len(movies)


def _choose_eval_members(val: set[int], test: set[int], cfg: DataConfig) -> set[int]:
    """All eval members, or a seeded subset preferring those in both splits, then test-only, then val-only."""
    cap = cfg.max_eval_members
    if cap is None or len(val | test) <= cap:
        return val | test
    rng = _rng(cfg.seed, _EVAL_MEMBERS)
    chosen: list[int] = []
    for tier in (sorted(val & test), sorted(test - val), sorted(val - test)):
        take = min(cap - len(chosen), len(tier))
        if take > 0:
            chosen += rng.choice(tier, size=take, replace=False).tolist()
    return set(chosen)


def _unique_tasks(tasks: Sequence[str]) -> list[str]:
    """Config order without repeats: a task listed twice must not produce duplicate groups."""
    return list(dict.fromkeys(tasks))


def build_ranking_splits(ml: MovieLens, cfg: DataConfig) -> dict[str, list[RankingRecord]]:
    """Ranking records for train, val and test (the semantics are in the module docstring)."""
    check_ids(ml)
    t1, t2 = time_cutoffs(ml.ratings, cfg)
    members = _members(ml)
    items = {int(m): Item(str(t), tuple(g)) for m, t, g in zip(ml.items.movie_id, ml.items.title, ml.items.genres)}
    builder = _Builder(
        cfg=cfg,
        tasks=_unique_tasks(cfg.tasks),
        items=items,
        candidates={movie: format_candidate(item) for movie, item in items.items()},
        catalogue=Catalogue(ml.ratings),
        item_history=ItemHistory(ml.ratings) if cfg.item_stats else None,
    )

    plans = _plan_groups(members, _collect_snapshots(members, t1, t2, cfg), builder.tasks, cfg)
    with gc_paused():
        splits = {split: builder.records(members, plan, split) for split, plan in plans.items()}
    for split, records in splits.items():
        if not records:
            raise DataError(
                f"MovieLens: the {split} split is empty with this data config (T1={t1}, T2={t2}); check "
                "data.val_start_quantile, data.test_start_quantile, data.min_history and the caps"
            )
    return splits


def _collect_snapshots(members: list[_Member], t1: int, t2: int, cfg: DataConfig) -> dict[str, list[_Snapshot]]:
    """Every member's snapshots per split, before any cap."""
    snapshots: dict[str, list[_Snapshot]] = {split: [] for split in SPLITS}
    for index, m in enumerate(members):
        i1, i2, n = m.index_of_time(t1), m.index_of_time(t2), len(m.ts)
        for split, first, stop, stride in (
            ("train", cfg.min_history, i1, cfg.train_stride),
            ("val", i1, i2, cfg.eval_stride),
            ("test", i2, n, cfg.eval_stride),
        ):
            snapshots[split] += [_Snapshot(index, s, stop) for s in _snapshots(m, first, stop, stride, cfg.min_history)]
    return snapshots


def _plan_groups(
    members: list[_Member], snapshots: dict[str, list[_Snapshot]], tasks: list[str], cfg: DataConfig
) -> dict[str, list[tuple[_Snapshot, str]]]:
    """The (snapshot, task) groups each split will hold, after the caps, in record order."""
    eval_members = _choose_eval_members(
        {members[s.member].user_id for s in snapshots["val"]}, {members[s.member].user_id for s in snapshots["test"]}, cfg
    )
    plans: dict[str, list[tuple[_Snapshot, str]]] = {}
    for split, snaps in snapshots.items():
        if split != "train":
            snaps = [s for s in snaps if members[s.member].user_id in eval_members]
        plans[split] = _ordered_groups(snaps, tasks)
    if cfg.max_train_groups is not None and len(plans["train"]) > cfg.max_train_groups:
        keep = _rng(cfg.seed, _TRAIN_SUBSAMPLE).choice(len(plans["train"]), size=cfg.max_train_groups, replace=False)
        plans["train"] = [plans["train"][i] for i in np.sort(keep)]
    return plans


def _ordered_groups(snaps: list[_Snapshot], tasks: list[str]) -> list[tuple[_Snapshot, str]]:
    """(snapshot, task) pairs ordered by (member, task, snapshot): the record order the splits promise."""
    by_member: dict[int, list[_Snapshot]] = {}
    for snap in snaps:
        by_member.setdefault(snap.member, []).append(snap)
    return [
        (snap, task)
        for member in sorted(by_member)
        for task in tasks
        for snap in sorted(by_member[member], key=lambda s: s.start)
    ]


def summarize(splits: dict[str, list[RankingRecord]]) -> dict[str, Any]:
    """Per split and task: members, groups, records and positive rate (for metrics.json and the CLI).

    A group is a run of consecutive records with the same (member, task, prefix), which is
    how the builder lays them out.
    """
    out: dict[str, Any] = {}
    for split, records in splits.items():
        stats: dict[str, dict[str, Any]] = {}
        previous: tuple[str, str, str] | None = None
        for r in records:
            s = stats.setdefault(r.task, {"members": set(), "groups": 0, "records": 0, "positives": 0})
            key = (r.member_id, r.task, r.prefix)
            if key != previous:
                s["groups"] += 1
                previous = key
            s["members"].add(r.member_id)
            s["records"] += 1
            s["positives"] += r.label
        out[split] = {
            task: {
                "members": len(s["members"]),
                "groups": s["groups"],
                "records": s["records"],
                "positive_rate": s["positives"] / s["records"],
            }
            for task, s in sorted(stats.items())
        }
    return out
