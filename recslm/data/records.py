"""Ranking records: the schema every stage reads, and loaders that validate row by row.

A record is ``{member_id, task, prefix, candidate, label}``: the prefix (instruction,
member profile, history) is shared by all candidates of a member, task and snapshot;
the candidate holds the item and the question; the answer is one token, " yes" or " no".

Files from outside (``.jsonl`` or ``.parquet``) go through :func:`load_records`, which
validates every row and either stops with a list of the bad rows (so users can fix
their file) or drops and counts them. Files recslm wrote itself go through
:func:`read_records`, a columnar fast path for the stages that re-read the data artifact.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from recslm.errors import DataError

ANSWERS: dict[int, str] = {1: " yes", 0: " no"}
SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_LISTED_BAD_ROWS = 10


class RankingRecord(BaseModel):
    """One member × item prompt with its binary label (and, when known, where it sits in time)."""

    model_config = ConfigDict(extra="forbid")

    member_id: str = Field(min_length=1, description="Member (user) id; ints are accepted and kept as text.")
    task: str = Field(min_length=1, description="Task name, e.g. like, love, next; AUC is reported per task.")
    prefix: str = Field(min_length=1, description="Instruction, profile and history; shared by a group's candidates.")
    candidate: str = Field(min_length=1, description="The item and the question, ending where the answer token follows.")
    label: int = Field(description="1 (answer ' yes') or 0 (answer ' no').")
    item_id: str | None = Field(None, description="The candidate item's id, for analysis.")
    ts: int | None = Field(None, description="Unix time of the candidate interaction.")
    history_max_ts: int | None = Field(None, description="Latest interaction time shown in the prefix.")

    @field_validator("member_id", "item_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # ids are often numbers in JSON or a DataFrame; they are labels, not quantities, so keep them as text
        if type(value) is str:  # the common case, first: the builder creates ~300k records
            return value
        value = _plain(value)
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("member_id", "task", "prefix", "candidate")
    @classmethod
    def _has_text(cls, value: str) -> str:
        # a whitespace-only prompt part tokenizes to (almost) nothing and scores as noise
        if value[:1].isspace() and not value.strip():
            raise ValueError("is only whitespace; expected text")
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _binary(cls, value: Any) -> int:
        if type(value) is int and (value == 0 or value == 1):  # the common case, first
            return value
        value = _plain(value)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, (int, float)) and value in (0, 1):
            return int(value)
        raise ValueError(f"expected 0 or 1, got {value!r}")


def _plain(value: Any) -> Any:
    """numpy scalars (records built from a DataFrame) as the Python values they stand for."""
    return value.item() if isinstance(value, np.generic) else value


FIELDS: tuple[str, ...] = tuple(RankingRecord.model_fields)
_MANY = TypeAdapter(list[RankingRecord])
# Column types of the parquet files recslm writes; the names must follow RankingRecord.
_SCHEMA = pa.schema(
    [
        ("member_id", pa.string()),
        ("task", pa.string()),
        ("prefix", pa.string()),
        ("candidate", pa.string()),
        ("label", pa.int8()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
        ("history_max_ts", pa.int64()),
    ]
)
if tuple(_SCHEMA.names) != FIELDS:  # a new record field must get a column type here too
    raise RuntimeError(f"records parquet schema {_SCHEMA.names} out of sync with RankingRecord fields {FIELDS}")


def answer_text(label: int) -> str:
    """The answer token's text for a label (" yes" for 1, " no" for 0)."""
    try:
        return ANSWERS[int(label)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"label must be 0 or 1, got {label!r}") from None


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while creating many records.

    Records hold no reference cycles, but each allocation counts towards the collector's
    thresholds, and its full passes over a growing heap of ~300k records cost more than
    building them (measured: 7 s vs 4 s for the default MovieLens splits).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class RecordsLoad:
    """Valid records of one file, and how many rows were dropped (on_bad_rows=skip)."""

    records: list[RankingRecord]
    bad_rows: int
    source: Path


@dataclass(frozen=True)
class _Unreadable:
    """A row that could not even be parsed (bad JSON, not UTF-8): kept to be reported by number."""

    reason: str


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number as in the file, parsed row); blank lines are skipped but still counted."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, _Unreadable(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, _Unreadable(f"invalid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                yield number, _Unreadable("JSON nested too deeply (a record is one flat object)")
            except ValueError as exc:  # e.g. an integer beyond Python's 4,300-digit conversion limit
                yield number, _Unreadable(f"invalid JSON ({exc})")


def _read_parquet_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row as plain Python values; nulls are None)."""
    yield from enumerate(_read_parquet_table(path).to_pylist(), start=1)


def _problem(row: Any) -> tuple[RankingRecord | None, str]:
    """The validated record, or None and ``field: reason`` for every problem in the row."""
    if isinstance(row, _Unreadable):
        return None, row.reason
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    try:
        return RankingRecord.model_validate(row), ""
    except ValidationError as exc:
        return None, "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {_reason(e)}" for e in exc.errors())


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown field (expected only {', '.join(FIELDS)})"
    if error["type"] == "missing":
        return "missing field"
    return str(error["msg"]).removeprefix("Value error, ")


def load_records(path: Path, on_bad_rows: Literal["error", "skip"] = "error") -> RecordsLoad:
    """Read and validate a .jsonl or .parquet records file; bad rows stop the load (listed) or are counted.

    Every row is checked because a single malformed label silently poisons AUC; listing
    the first rows by number lets users fix the file instead of guessing.
    """
    path = Path(path)
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows must be 'error' or 'skip', got {on_bad_rows!r}")
    if not path.is_file():
        raise DataError(f"{path}: records file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows, unit = _jsonl_rows(path), "line"
    elif suffix == ".parquet":
        rows, unit = _parquet_rows(path), "row"
    else:
        raise DataError(f"{path}: unknown records format {path.suffix!r}; expected .jsonl or .parquet")
    records: list[RankingRecord] = []
    bad: list[str] = []
    with gc_paused():
        for number, row in rows:
            record, problem = _problem(row)
            if record is None:
                bad.append(f"{unit} {number}: {problem}")
            else:
                records.append(record)
    if bad and on_bad_rows == "error":
        listed = "\n  ".join(bad[:MAX_LISTED_BAD_ROWS])
        more = f"\n  ... and {len(bad) - MAX_LISTED_BAD_ROWS} more" if len(bad) > MAX_LISTED_BAD_ROWS else ""
        raise DataError(
            f"{path}: {len(bad)} bad row{'s' if len(bad) != 1 else ''} of {len(bad) + len(records)} "
            f"(fix them, or set data.on_bad_rows: skip to drop them)\n  {listed}{more}"
        )
    if not records:
        raise DataError(f"{path}: no valid records (expected rows with fields {', '.join(FIELDS[:5])})")
    return RecordsLoad(records=records, bad_rows=len(bad), source=path)


def load_record_splits(folder: Path, on_bad_rows: Literal["error", "skip"] = "error") -> dict[str, RecordsLoad]:
    """Load train/val/test from a folder holding exactly one ``<split>.jsonl`` or ``<split>.parquet`` each."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: records folder not found (expected train, val and test .jsonl or .parquet files)")
    found: dict[str, Path] = {}
    for split in SPLITS:
        files = [p for p in (folder / f"{split}.jsonl", folder / f"{split}.parquet") if p.is_file()]
        if len(files) != 1:
            what = "is missing" if not files else "exists as both .jsonl and .parquet"
            raise DataError(f"{folder}: split {split!r} {what}; expected exactly one of {split}.jsonl or {split}.parquet")
        found[split] = files[0]
    # check every split is present before validating any: a missing file is cheaper to report first
    return {split: load_records(file, on_bad_rows) for split, file in found.items()}


def write_records(records: list[RankingRecord], path: Path) -> None:
    """Write records as parquet, atomically: a crash never leaves a half-written file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [getattr(r, name) for r in records] for name in FIELDS}
    table = pa.Table.from_pydict(columns, schema=_SCHEMA)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_records(path: Path) -> list[RankingRecord]:
    """Read a parquet file written by :func:`write_records` (columnar; for recslm's own artifacts).

    Rows are still validated (pydantic-core, in one call), but bad rows are not collected
    one by one: a file recslm wrote is expected to be valid, and one that is not means the
    artifact is corrupt, so the first error is reported and the load stops.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: records file not found")
    table = _read_parquet_table(path)
    if tuple(table.column_names) != FIELDS:
        raise DataError(
            f"{path}: not a records file written by recslm (columns {table.column_names}, expected {list(FIELDS)}); "
            "use load_records for files from elsewhere"
        )
    return records_from_rows(table.to_pylist(), str(path))


def records_from_rows(rows: list[dict[str, Any]], source: str) -> list[RankingRecord]:
    """Validate many rows in one pydantic-core call (a third faster than one model at a time).

    For rows that are expected to be valid (built or written by recslm): the first
    error stops the load, naming ``source``, the 1-based row and the field.
    """
    try:
        with gc_paused():
            return _MANY.validate_python(rows)
    except ValidationError as exc:
        first = exc.errors()[0]
        row = int(first["loc"][0]) + 1 if first["loc"] else 0
        field = ".".join(str(p) for p in first["loc"][1:]) or "row"
        raise DataError(f"{source}: row {row}: {field}: {_reason(first)} ({exc.error_count()} errors in all)") from None
