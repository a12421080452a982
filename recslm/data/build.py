"""The data stage: ranking records per split and the tokenizer, written as one artifact folder.

Layout of the artifact (what later stages read):
    records/train.parquet, records/val.parquet, records/test.parquet
    tokenizer/          a Hugging Face tokenizer directory (trained BPE or the pretrained one)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recslm.config import DataConfig
from recslm.data.movielens import build_ranking_splits, load_movielens, summarize
from recslm.data.records import SPLITS, RankingRecord, answer_text, load_record_splits, read_records, write_records
from recslm.data.tokenizer import answer_token_ids, load_tokenizer, train_bpe_tokenizer

def records_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / "records" / f"{split}.parquet"


def tokenizer_path(data_dir: Path) -> Path:
    return Path(data_dir) / "tokenizer"


def load_split(data_dir: Path, split: str) -> list[RankingRecord]:
    """Records of one split of a data artifact."""
    return read_records(records_path(data_dir, split))


def make_splits(cfg: DataConfig) -> tuple[dict[str, list[RankingRecord]], int]:
    """Build (MovieLens) or load (records files) the three splits; returns them and the dropped-row count."""
    if cfg.source == "movielens":
        return build_ranking_splits(load_movielens(cfg.path), cfg), 0
    loads = load_record_splits(Path(cfg.path), cfg.on_bad_rows)
    return {split: loads[split].records for split in SPLITS}, sum(load.bad_rows for load in loads.values())


def tokenizer_corpus(records: list[RankingRecord]) -> list[str]:
    """Distinct texts of the training records (a prefix is shared by k candidates: count it once)."""
    texts = {r.prefix for r in records}
    texts.update(r.candidate + answer_text(r.label) for r in records)
    return sorted(texts)


def build_data_artifact(cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    """Write records and tokenizer into ``out_dir``; return the stage metrics."""
    splits, bad_rows = make_splits(cfg)
    for split in SPLITS:
        write_records(splits[split], records_path(out_dir, split))
    if cfg.tokenizer.kind == "bpe":
        tokenizer = train_bpe_tokenizer(tokenizer_corpus(splits["train"]), cfg.tokenizer.vocab_size)
        where = "the trained BPE tokenizer (data.tokenizer.vocab_size may be too small)"
    else:
        tokenizer = load_tokenizer(Path(cfg.tokenizer.path))
        where = f"data.tokenizer.path {cfg.tokenizer.path}"
    answer_token_ids(tokenizer, where=where)
    tokenizer.save_pretrained(str(tokenizer_path(out_dir)))
    sample = splits["test"][:2000]
    return {
        "splits": summarize(splits),
        "bad_rows": bad_rows,
        "vocab_size": len(tokenizer),
        "prefix_tokens_mean": float(np.mean([len(tokenizer.encode(r.prefix)) for r in sample])) if sample else 0.0,
        "candidate_tokens_mean": float(np.mean([len(tokenizer.encode(r.candidate)) for r in sample])) if sample else 0.0,
    }
