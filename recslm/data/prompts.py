"""Prompt featurization: member prefix and candidate text, as pure functions.

Tokenization contract: the prefix ends with a newline and the candidate starts with a
letter, so a byte-level BPE tokenizes ``prefix + candidate`` exactly as the prefix's
tokens followed by the candidate's (no token straddles the boundary). That is what lets
a member's k candidates share the prefix token for token: KV-cache reuse offline and
prefix caching in serving. The candidate ends with "Answer:" and the answer token
(" yes" / " no") follows.

Texts are deliberately compact (one line per history item, no prose): the prefix
dominates the token count and the models train on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

TASK_INSTRUCTIONS: dict[str, str] = {
    "like": "Task: will the member rate this movie 4 stars or more?",
    "love": "Task: will the member rate this movie 5 stars?",
    "next": "Task: is this the next movie the member will rate?",
}
CANDIDATE_LABEL = "Movie: "
ANSWER_CUE = "Answer:"


@dataclass(frozen=True)
class MemberProfile:
    """What the prompt shows about a member; demographics only, so it is the same at any time."""

    age: int
    gender: str
    occupation: str


@dataclass(frozen=True)
class Item:
    """What the prompt shows about an item (MovieLens titles already carry the year)."""

    title: str
    genres: tuple[str, ...]

    @cached_property
    def text(self) -> str:
        """``title | genre, genre`` (``unknown`` when the item has no genre).

        Computed once per item: a catalogue's items recur in thousands of histories.
        """
        genres = ", ".join(_one_line(g) for g in self.genres) or "unknown"
        return f"{_one_line(self.title)} | {genres}"


@dataclass(frozen=True)
class ItemStats:
    """What was known about an item at decision time: its ratings so far, their mean, and
    (when shown) its ratings in the last 30 days."""

    count: int
    mean: float
    recent: int | None = None
    share_above: float | None = None  # of the items rated before the decision, the share rated more often (style rank)


POPULARITY = ((200, "very popular"), (100, "popular"), (30, "known"), (5, "niche"), (0, "new"))
TOP_PERCENT = (1, 2, 5, 10, 20, 35, 50, 75, 100)


def top_percent(share_above: float) -> int:
    """The smallest bucket of TOP_PERCENT the item is in: "top 5%" when under 5 % of items are
    more popular. Relative to the catalogue at the time, so it does not drift as ratings pile up."""
    return next(p for p in TOP_PERCENT if share_above < p / 100 or p == 100)
RECENCY = ((20, "trending"), (5, "active"), (1, "slow"), (0, "quiet"))
RANK_STYLES = ("rank", "rank_scale")  # the styles that print popularity as a rank among the items so far


def log2_scale(count: int, top: int = 10) -> int:
    """0 for none, then 1 + floor(log2(count)), capped at ``top``: one small token per doubling."""
    return 0 if count <= 0 else min(top, 1 + int(count).bit_length() - 1)


def stats_text(stats: ItemStats, style: str = "words") -> str:
    """How the stats read. ``words``: coarse words and a half-star mean (a small model generalizes
    over these better than raw counts). ``scale``: finer, still one small token each: popularity
    and recent ratings on a log2 scale, the mean to a tenth. ``rank``: popularity as the item's
    rank among the items rated so far ("top 5%"), which a count cannot saturate: the words'
    top bucket holds more and more items as the years go by, a rank does not. ``rank_scale``:
    the rank, the mean to a tenth and recent ratings on the log2 scale, the finest of the four
    (logistic regression on what each prints: README, Figures)."""
    fine = style in ("scale", "rank_scale")  # the mean to a tenth and recent ratings on the log2 scale
    if style == "scale":
        popularity = f"pop {log2_scale(stats.count)}"
    elif not stats.count:
        return "new"
    elif style in RANK_STYLES:
        if stats.share_above is None:
            raise ValueError(f"stats_style {style} needs ItemStats.share_above (ItemHistory.before(..., rank=True))")
        popularity = f"top {top_percent(stats.share_above)}%"
    else:
        popularity = next(name for floor, name in POPULARITY if stats.count >= floor)
    parts = [popularity]
    if stats.count:
        parts.append(f"avg {stats.mean:.1f}" if fine else f"avg {round(stats.mean * 2) / 2:.1f}")
    if stats.recent is not None:
        parts.append(f"recent {log2_scale(stats.recent)}" if fine else next(name for floor, name in RECENCY if stats.recent >= floor))
    return ", ".join(parts)


@dataclass(frozen=True)
class HistoryItem:
    """A past interaction: the item and the member's rating of it."""

    item: Item
    rating: int


def _one_line(text: str) -> str:
    """Fold line breaks into spaces: one history line per item is what keeps prompts parseable."""
    return " ".join(str(text).split())


def item_text(item: Item) -> str:
    """``title | genre, genre``: how an item reads in a history line and in a candidate."""
    return item.text


def format_prefix(task: str, member: MemberProfile, history: Sequence[HistoryItem], summary: bool = False) -> str:
    """Instruction, profile and rated history (oldest first, most recent last); ends with a newline.
    With ``summary`` the History line shows the mean of the shown ratings (half stars)."""
    try:
        instruction = TASK_INSTRUCTIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_INSTRUCTIONS)}") from None
    lines = [
        instruction,
        f"Member: {member.age}, {_one_line(member.gender)}, {_one_line(member.occupation)}",
        f"History (avg {round(2 * sum(h.rating for h in history) / len(history)) / 2:.1f}):" if summary and history else "History:",
    ]
    lines.extend(f"{h.item.text} | {h.rating}" for h in history)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TasteMatch:
    """How the member rated the shown history items that share a genre with the candidate.

    Nothing a reader of the prefix could not work out, but a small model has to find the
    shared genres across ten history lines and average their ratings to get it; logistic
    regression gets it as a feature (``history_mean_same_genre``), so printing it puts the
    two on the same footing (``data.candidate_match``)."""

    similar: int
    mean: float


def taste_match(item: Item, history: Sequence[HistoryItem]) -> TasteMatch:
    """Shown history items sharing at least one genre with ``item``, and their mean rating (0 when none)."""
    genres = set(item.genres)
    ratings = [h.rating for h in history if genres & set(h.item.genres)]
    return TasteMatch(len(ratings), sum(ratings) / len(ratings) if ratings else 0.0)


def match_text(match: TasteMatch) -> str:
    """``similar 3, yours avg 4.3`` (``similar 0`` when no shown item shares a genre)."""
    return f"similar {match.similar}, yours avg {match.mean:.1f}" if match.similar else "similar 0"


def format_candidate(item: Item, stats: ItemStats | None = None, style: str = "words", match: TasteMatch | None = None) -> str:
    """The item (with its stats so far and the member's taste match, if given) and the question;
    starts with a letter, ends with "Answer:"."""
    extra = f" | {stats_text(stats, style)}" if stats is not None else ""
    if match is not None:
        extra += f" | {match_text(match)}"
    return f"{CANDIDATE_LABEL}{item_text(item)}{extra}\n{ANSWER_CUE}"
