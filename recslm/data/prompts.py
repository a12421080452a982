"""Prompt featurization: member prefix and candidate text, as pure functions.

Tokenization contract: the prefix ends with a newline and the candidate starts with a
letter, so a byte-level BPE tokenizes ``prefix + candidate`` exactly as the prefix's
tokens followed by the candidate's. That is what lets a member's k candidates share the
prefix token for token (KV-cache reuse offline and prefix caching in serving). The
candidate ends with "Answer:" and the answer token (" yes" / " no") follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TASK_INSTRUCTIONS: dict[str, str] = {
    "like": "Task: will the member rate this movie 4 stars or more?",
    "love": "Task: will the member rate this movie 5 stars?",
    "next": "Task: is this the next movie the member will rate?",
}


@dataclass(frozen=True)
class MemberProfile:
    age: int
    gender: str
    occupation: str


@dataclass(frozen=True)
class Item:
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class HistoryItem:
    item: Item
    rating: int


def item_text(item: Item) -> str:
    """Title (MovieLens titles carry the year) and genres."""
    return f"{item.title} | {', '.join(item.genres) or 'unknown'}"


def format_prefix(task: str, member: MemberProfile, history: Sequence[HistoryItem]) -> str:
    """Instruction, profile and rated history (oldest first, most recent last); ends with a newline."""
    lines = [TASK_INSTRUCTIONS[task], f"Member: {member.age}, {member.gender}, {member.occupation}", "History:"]
    lines.extend(f"{item_text(h.item)} | {h.rating}" for h in history)
    return "\n".join(lines) + "\n"


def format_candidate(item: Item) -> str:
    """The item and the question; the answer token follows "Answer:"."""
    return f"Movie: {item_text(item)}\nAnswer:"
