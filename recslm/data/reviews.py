"""Generative records from the Women's E-Commerce Clothing Reviews data set (CC0).

The ranking path answers with one token; this module feeds the *generative* path
(teacher SFT on whole responses, token-level and on-policy distillation). A record is a
prompt describing the product (division, department, class), the reviewer (age) and
their verdict (rating, recommendation), and the response is the review the customer
wrote: ``" " + title + ": " + text`` (just ``" " + text`` when the title is missing).
Rows without review text are dropped: there is nothing to learn from them.

Reading (:func:`load_reviews`): the bundled subset (default), the original parquet file
of the shared data folder, or the data set's original CSV
(``Womens Clothing E-Commerce Reviews.csv``), given as a file or as a folder holding one.

Splits (:func:`split_of`): by a hash of the Clothing ID, so all reviews of a product land
in the same split and a model is never validated on a product it was trained on. The
hash is sha256, not Python's ``hash`` (salted per process), so the split is the same on
every machine. Review counts per product are very skewed (the largest product has
~1,000 reviews), so the record fractions of the splits only roughly follow the
product fractions.

Lengths: responses longer than ``max_response_chars`` are cut at the last space before
the limit. Cutting instead of dropping keeps the mix of products and ratings of the data
set (dropping long reviews would keep mostly terse, often negative, ones); the original
data set itself stores texts cut at 500 characters.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from recslm.data.records import SPLITS
from recslm.errors import DataError

ORIGINAL_PARQUET = "WomensClothingE-CommerceReviews.parquet"
ORIGINAL_CSV = "Womens Clothing E-Commerce Reviews.csv"
BUNDLED_FILE = "reviews.parquet"
COLUMNS: tuple[str, ...] = (
    "Clothing ID", "Age", "Title", "Review Text", "Rating", "Recommended IND",
    "Division Name", "Department Name", "Class Name",
)  # fmt: skip
INTEGER_COLUMNS: tuple[str, ...] = ("Clothing ID", "Age", "Rating", "Recommended IND")
TEXT_COLUMNS: tuple[str, ...] = ("Title", "Review Text", "Division Name", "Department Name", "Class Name")
BUNDLED_ROWS = 4000
MAX_RESPONSE_CHARS = 400


@dataclass(frozen=True)
class GenerationRecord:
    """A prompt and the reference response a model should continue it with.

    ``item_id`` (the Clothing ID for reviews) is kept for analysis and to check that no
    product crosses splits; training only reads ``prompt`` and ``response``.
    """

    prompt: str
    response: str
    item_id: str = ""
    rating: int | None = None  # the star rating the prompt states (1-5): what the task metric checks the written review against


def bundled_path() -> Path:
    """The subset shipped inside the package (source and CC0 licence in README.md beside it)."""
    return Path(str(resources.files("recslm.data") / "bundled" / "clothing-reviews" / BUNDLED_FILE))


# --------------------------------------------------------------------------- reading


def _resolve(path: Path) -> Path:
    """A file as given, or the one reviews file inside a folder (original parquet, bundled name, or CSV)."""
    if path.is_file():
        return path
    if path.is_dir():
        for name in (ORIGINAL_PARQUET, BUNDLED_FILE, ORIGINAL_CSV):
            if (path / name).is_file():
                return path / name
        raise DataError(f"{path}: no reviews file here; expected {ORIGINAL_PARQUET}, {BUNDLED_FILE} or {ORIGINAL_CSV!r}")
    raise DataError(f"{path}: reviews file not found")


def _read_frame(file: Path) -> pd.DataFrame:
    suffix = file.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise DataError(f"{file}: unknown reviews format {file.suffix!r}; expected .parquet or .csv")
    try:
        return pd.read_parquet(file) if suffix == ".parquet" else pd.read_csv(file)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{file}: cannot be read ({type(exc).__name__}: {exc})") from exc


def _check_columns(frame: pd.DataFrame, file: Path) -> None:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{file}: missing column{'s' if len(missing) > 1 else ''} {missing}; expected {list(COLUMNS)}")


def _integers(frame: pd.DataFrame, file: Path) -> pd.DataFrame:
    """Integer columns as int64, or a DataError naming the column and the first bad rows."""
    out = frame.copy()
    for column in INTEGER_COLUMNS:
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            rows = (out.index[bad.to_numpy()][:5] + 1).tolist()  # 1-based rows of the file
            raise DataError(f"{file}: column {column!r}: expected integers, {int(bad.sum())} rows are not (rows {rows})")
        out[column] = values.astype("int64")
    if not out["Rating"].between(1, 5).all():
        raise DataError(f"{file}: column 'Rating': expected 1 to 5, found {sorted(set(out['Rating']) - set(range(1, 6)))[:5]}")
    if not out["Recommended IND"].isin((0, 1)).all():
        raise DataError(f"{file}: column 'Recommended IND': expected 0 or 1")
    return out


def load_reviews(path: Path | str | None = None) -> pd.DataFrame:
    """The reviews that have text, with validated columns (None = the bundled subset).

    ``path`` is a .parquet or .csv file, or a folder holding one of the known file names.
    Text columns come back as str with missing values as "" (Title may be missing).
    """
    file = _resolve(Path(path)) if path is not None else bundled_path()
    if path is None and not file.is_file():
        raise DataError(f"{file}: the bundled reviews subset is missing from this installation")
    frame = _read_frame(file)
    _check_columns(frame, file)
    frame = frame.loc[:, list(COLUMNS)]
    frame = frame[frame["Review Text"].notna() & (frame["Review Text"].astype(str).str.strip() != "")]
    if frame.empty:
        raise DataError(f"{file}: no row has a 'Review Text'")
    frame = _integers(frame, file)
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].fillna("").astype(str)
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- records


def _clean(text: str) -> str:
    """One line of text: the prompt's line structure stays unambiguous and BPE spends no tokens on stray newlines."""
    return re.sub(r"\s+", " ", text).strip()


def clip(text: str, max_chars: int | None) -> str:
    """``text`` cut at the last space before ``max_chars`` (hard cut if a single word is longer)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1].rfind(" ")
    return text[:cut].rstrip() if cut > 0 else text[:max_chars]


def review_prompt(row: dict) -> str:
    """The instruction and the conditioning facts; the review follows ``Review:``."""
    names = [_clean(row[c]) or "unknown" for c in ("Division Name", "Department Name", "Class Name")]
    return (
        "Write the customer's review of this clothing item.\n"
        f"Product: {names[0]} / {names[1]} / {names[2]}\n"
        f"Reviewer age: {int(row['Age'])}\n"
        f"Rating: {int(row['Rating'])} of 5\n"
        f"Recommends it: {'yes' if int(row['Recommended IND']) else 'no'}\n"
        "Review:"
    )


def review_response(row: dict, max_chars: int | None = MAX_RESPONSE_CHARS) -> str:
    """``" title: text"`` (or ``" text"``); the leading space continues ``Review:`` as BPE expects."""
    title, text = _clean(row["Title"]), _clean(row["Review Text"])
    body = f"{title}: {text}" if title else text
    return " " + clip(body, None if max_chars is None else max_chars - 1)


def split_of(clothing_id: int | str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """train / val / test for a product, from a sha256 of its id (stable across machines and runs)."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 and sum below 1")
    u = _unit(f"clothing-id:{clothing_id}")
    if u >= 1.0 - test_fraction:
        return "test"
    if u >= 1.0 - test_fraction - val_fraction:
        return "val"
    return "train"


def _unit(key: str) -> float:
    """A uniform number in [0, 1) from a string key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def build_review_splits(
    path: Path | str | None = None,
    *,
    max_records: int | None = None,
    max_response_chars: int | None = MAX_RESPONSE_CHARS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[GenerationRecord]]:
    """Train/val/test GenerationRecords, split by product.

    Each split is put in a seeded hash order (so a ``max_records`` cap, applied to each
    split, keeps a random-looking sample of products and ratings rather than the first
    rows of the file) and the same config always gives the same records.
    """
    if max_records is not None and max_records < 1:
        raise ValueError(f"max_records must be >= 1 or None, got {max_records}")
    frame = load_reviews(path)
    rows = frame.to_dict("records")
    order = sorted(range(len(rows)), key=lambda i: _unit(f"{seed}:row:{i}"))
    splits: dict[str, list[GenerationRecord]] = {s: [] for s in SPLITS}
    for i in order:
        row = rows[i]
        bucket = splits[split_of(row["Clothing ID"], val_fraction, test_fraction)]
        if max_records is None or len(bucket) < max_records:
            bucket.append(GenerationRecord(review_prompt(row), review_response(row, max_response_chars), str(row["Clothing ID"]), int(row["Rating"])))
    return splits


# --------------------------------------------------------------------------- the bundled subset


def write_bundled_subset(source: Path | str, dest: Path | str | None = None, rows: int = BUNDLED_ROWS) -> Path:
    """Write the bundled copy: ``rows`` reviews with text, picked by a hash of their row number, needed columns only.

    How the shipped file was made (see README.md beside it); atomic, so an interrupted
    run never leaves a half-written file in the package.
    """
    frame = load_reviews(source)
    keep = sorted(sorted(range(len(frame)), key=lambda i: _unit(f"bundle:row:{i}"))[:rows])
    subset = frame.iloc[keep].reset_index(drop=True)
    subset["Title"] = subset["Title"].replace("", None)
    out = Path(dest) if dest is not None else bundled_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        subset.to_parquet(tmp, index=False, compression="zstd")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def texts_of(records: Sequence[GenerationRecord]) -> list[str]:
    """Prompts and responses, e.g. to train a BPE tokenizer that covers both."""
    return [t for r in records for t in (r.prompt, r.response)]
