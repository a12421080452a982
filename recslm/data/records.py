"""Ranking records: the schema every stage reads, and loaders that validate row by row.

A record is ``{member_id, task, prefix, candidate, label}``: the prefix (instruction,
member profile, history) is shared by all candidates of a member and task; the
candidate holds the item and the question; the answer is one token, " yes" or " no".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recslm.errors import DataError

ANSWERS: dict[int, str] = {1: " yes", 0: " no"}
SPLITS = ("train", "val", "test")
MAX_LISTED_BAD_ROWS = 10


class RankingRecord(BaseModel):
    """One member × item prompt with its binary label."""

    model_config = ConfigDict(extra="forbid")

    member_id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    prefix: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    label: int
    item_id: str | None = None
    ts: int | None = None
    history_max_ts: int | None = None

    @field_validator("member_id", "item_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("label", mode="before")
    @classmethod
    def _binary(cls, value: Any) -> int:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, (int, float)) and value in (0, 1):
            return int(value)
        raise ValueError(f"expected 0 or 1, got {value!r}")


def answer_text(label: int) -> str:
    """The answer token's text for a label."""
    return ANSWERS[int(label)]


@dataclass
class RecordsLoad:
    """Valid records of one file, and how many rows were dropped (on_bad_rows=skip)."""

    records: list[RankingRecord]
    bad_rows: int
    source: Path


def _rows(path: Path) -> list[tuple[int, Any]]:
    """(1-based line or row number, raw row) pairs; a JSON error is kept as the row's problem."""
    if path.suffix == ".jsonl":
        rows: list[tuple[int, Any]] = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    rows.append((number, _BadJson(str(exc))))
        return rows
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        return [(number, {k: _plain(v) for k, v in row.items()}) for number, row in enumerate(frame.to_dict("records"), start=1)]
    raise DataError(f"{path}: unknown records format {path.suffix!r}; expected .jsonl or .parquet")


class _BadJson:
    def __init__(self, message: str):
        self.message = message


def _plain(value: Any) -> Any:
    """Parquet gives NaN for missing optional values and numpy scalars: make them plain Python."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def _problem(row: Any) -> str | None:
    if isinstance(row, _BadJson):
        return f"invalid JSON ({row.message})"
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    try:
        RankingRecord.model_validate(row)
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {_short(e)}" for e in exc.errors())
    return None


def _short(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "missing field"
    return error["msg"].removeprefix("Value error, ")


def load_records(path: Path, on_bad_rows: Literal["error", "skip"] = "error") -> RecordsLoad:
    """Read and validate a .jsonl or .parquet records file; bad rows fail (listed) or are counted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: records file not found")
    records: list[RankingRecord] = []
    bad: list[str] = []
    for number, row in _rows(path):
        problem = _problem(row)
        if problem is None:
            records.append(RankingRecord.model_validate(row))
        else:
            bad.append(f"line {number}: {problem}")
    if bad and on_bad_rows == "error":
        listed = "\n  ".join(bad[:MAX_LISTED_BAD_ROWS])
        more = f"\n  ... and {len(bad) - MAX_LISTED_BAD_ROWS} more" if len(bad) > MAX_LISTED_BAD_ROWS else ""
        raise DataError(
            f"{path}: {len(bad)} bad rows (fix them, or set data.on_bad_rows: skip to drop them)\n  {listed}{more}"
        )
    if not records:
        raise DataError(f"{path}: no valid records")
    return RecordsLoad(records=records, bad_rows=len(bad), source=path)


def load_record_splits(folder: Path, on_bad_rows: Literal["error", "skip"] = "error") -> dict[str, RecordsLoad]:
    """Load train/val/test records from a folder holding one .jsonl or .parquet file per split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: records folder not found")
    loads = {}
    for split in SPLITS:
        found = [p for p in (folder / f"{split}.jsonl", folder / f"{split}.parquet") if p.is_file()]
        if len(found) != 1:
            what = "is missing" if not found else "exists as both .jsonl and .parquet"
            raise DataError(f"{folder}: split {split!r} {what}; expected exactly one of {split}.jsonl or {split}.parquet")
        loads[split] = load_records(found[0], on_bad_rows)
    return loads


def write_records(records: list[RankingRecord], path: Path) -> None:
    """Write records as parquet, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([r.model_dump() for r in records], columns=list(RankingRecord.model_fields))
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_records(path: Path) -> list[RankingRecord]:
    """Read a parquet file recslm wrote (trusted: constructed without per-row validation)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: records file not found")
    frame = pd.read_parquet(path)
    return [
        RankingRecord.model_construct(**{k: _plain(v) for k, v in row.items()}) for row in frame.to_dict("records")
    ]
