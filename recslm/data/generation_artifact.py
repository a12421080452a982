"""The data stage of the generative task: generation records per split and one tokenizer for
prompts and responses, written as one artifact folder.

Layout (what later stages read; the ranking artifact's layout, other columns):
    records/train.parquet, records/val.parquet, records/test.parquet   prompt, response, item_id, rating
    tokenizer/          a Hugging Face tokenizer directory with an EOS token (a response must end)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recslm.config import DataConfig
from recslm.data.build import records_path, tokenizer_path
from recslm.data.records import SPLITS
from recslm.data.reviews import GenerationRecord, build_review_splits, texts_of
from recslm.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from recslm.errors import DataError, TokenizerError

COLUMNS = ("prompt", "response", "item_id", "rating")


def write_generation_records(records: list[GenerationRecord], path: Path) -> None:
    """One split as parquet (an empty split keeps its columns, so readers need no special case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([(r.prompt, r.response, r.item_id, r.rating) for r in records], columns=list(COLUMNS))
    frame["rating"] = frame["rating"].astype("Int64")
    frame.to_parquet(path, index=False)


def load_generation_split(data_dir: Path, split: str) -> list[GenerationRecord]:
    """The generation records of one split of a data artifact."""
    path = records_path(data_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: no {split} records in this data artifact")
    frame = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a generation-records file (missing columns {missing}); is this a ranking data artifact?")
    return [
        GenerationRecord(str(p), str(r), str(i), None if pd.isna(g) else int(g))
        for p, r, i, g in zip(frame["prompt"], frame["response"], frame["item_id"], frame["rating"])
    ]


def build_generation_artifact(cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    """Write the reviews' records and the tokenizer into ``out_dir``; return the stage metrics."""
    splits = build_review_splits(cfg.path, max_records=cfg.max_records, max_response_chars=cfg.max_response_chars, seed=cfg.seed)
    for split in SPLITS:
        if not splits[split]:
            raise DataError(f"data: the reviews give no {split} records (data.path {cfg.path or 'bundled'}, data.max_records {cfg.max_records})")
        write_generation_records(splits[split], records_path(out_dir, split))
    if cfg.tokenizer.kind == "bpe":
        tokenizer = train_bpe_tokenizer(texts_of(splits["train"]), cfg.tokenizer.vocab_size)
    else:
        tokenizer = load_tokenizer(Path(cfg.tokenizer.path))
        if tokenizer.eos_token_id is None:
            raise TokenizerError(f"data.tokenizer.path {cfg.tokenizer.path}: the tokenizer has no EOS token; a generative model must learn where a response ends")
    tokenizer.save_pretrained(str(tokenizer_path(out_dir)))
    sample = splits["test"][:500]
    return {
        "task": "generative",
        "splits": {s: {"records": len(splits[s]), "products": len({r.item_id for r in splits[s]})} for s in SPLITS},
        "vocab_size": len(tokenizer),
        "prompt_tokens_mean": float(np.mean([len(tokenizer.encode(r.prompt)) for r in sample])),
        "response_tokens_mean": float(np.mean([len(tokenizer.encode(r.response, add_special_tokens=False)) for r in sample])),
    }
