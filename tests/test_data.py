"""Data: MovieLens tasks without leakage, determinism, both file layouts, row-validated records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recslm.config import DataConfig
from recslm.data.build import build_data_artifact, load_split, tokenizer_corpus
from recslm.data.movielens import GENRES, bundled_path, build_ranking_splits, load_movielens, time_cutoffs
from recslm.data.records import RankingRecord, load_record_splits, load_records, read_records, write_records
from recslm.data.tokenizer import answer_token_ids, load_tokenizer
from recslm.errors import DataError

CFG = DataConfig(history_len=6, candidates_per_member=4, train_stride=24, eval_stride=16, max_eval_members=80)


@pytest.fixture(scope="module")
def ml():
    return load_movielens(None)


@pytest.fixture(scope="module")
def splits(ml):
    return build_ranking_splits(ml, CFG)


def test_no_future_interaction_in_any_history(ml, splits):
    t1, t2 = time_cutoffs(ml.ratings, CFG)
    titles: dict[str, list[int]] = {}  # MovieLens has a few titles under two ids
    for title, movie in zip(ml.items.title, ml.items.movie_id):
        titles.setdefault(title, []).append(movie)
    rated_at = {(u, m): t for u, m, t in zip(ml.ratings.user_id, ml.ratings.movie_id, ml.ratings.timestamp)}
    windows = {"train": (None, t1), "val": (t1, t2), "test": (t2, None)}
    for split, records in splits.items():
        lo, hi = windows[split]
        for r in records:
            assert r.history_max_ts < r.ts
            assert (lo is None or r.ts >= lo) and (hi is None or r.ts < hi), (split, r.ts)
        # read the history back out of the prompt text and check each line against the ratings
        for r in records[:: max(1, len(records) // 300)]:
            lines = r.prefix.split("History:\n")[1].strip().split("\n")
            assert 1 <= len(lines) <= CFG.history_len
            for line in lines:
                title, _genres, rating = line.rsplit(" | ", 2)
                when = [rated_at[(int(r.member_id), m)] for m in titles[title] if (int(r.member_id), m) in rated_at]
                assert when and min(when) < r.ts, f"{split}: member {r.member_id} sees {title!r} rated at {when} >= {r.ts}"


def test_groups_share_prefix_and_tokenization_contract(splits):
    by_group: dict[tuple, set] = {}
    for r in splits["test"]:
        by_group.setdefault((r.member_id, r.task, r.history_max_ts), set()).add(r.prefix)
        assert r.prefix.endswith("\n") and not r.candidate[0].isspace() and r.candidate.endswith("Answer:")
    assert all(len(prefixes) == 1 for prefixes in by_group.values())


def test_labels_match_the_ratings(ml, splits):
    rating = {(str(u), str(m)): r for u, m, r in zip(ml.ratings.user_id, ml.ratings.movie_id, ml.ratings.rating)}
    for r in splits["train"][:3000] + splits["test"]:
        if r.task == "like":
            assert r.label == int(rating[(r.member_id, r.item_id)] >= 4)
        elif r.task == "love":
            assert r.label == int(rating[(r.member_id, r.item_id)] == 5)
    groups: dict[tuple, list[RankingRecord]] = {}
    for r in splits["test"]:
        if r.task == "next":
            groups.setdefault((r.member_id, r.prefix), []).append(r)
    assert groups
    for rows in groups.values():
        assert sum(r.label for r in rows) == 1 and len(rows) == CFG.candidates_per_member
        for r in rows:
            assert ((r.member_id, r.item_id) in rating) == bool(r.label)  # negatives were never rated


def test_deterministic_for_a_seed(ml, splits):
    again = build_ranking_splits(ml, CFG)
    assert all([r.model_dump() for r in again[s]] == [r.model_dump() for r in splits[s]] for s in splits)
    other = build_ranking_splits(ml, CFG.model_copy(update={"seed": 1}))
    negatives = lambda sp: [r.item_id for r in sp["test"] if r.task == "next" and r.label == 0]  # noqa: E731
    assert negatives(other) != negatives(splits)


def test_tasks_and_caps_are_honoured(ml):
    cfg = CFG.model_copy(update={"tasks": ["love"], "max_train_groups": 50})
    out = build_ranking_splits(ml, cfg)
    assert {r.task for s in out.values() for r in s} == {"love"}
    assert len({(r.member_id, r.prefix) for r in out["train"]}) == 50


def test_original_ml100k_layout_reads_the_same(ml, tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    ml.ratings.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    raw_items = pd.read_parquet(bundled_path() / "MovieLens100k_items.parquet")
    raw_items.to_csv(folder / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    pd.read_parquet(bundled_path() / "MovieLens100k_users.parquet").to_csv(folder / "u.user", sep="|", header=False, index=False)
    other = load_movielens(folder)
    pd.testing.assert_frame_equal(other.ratings, ml.ratings)
    pd.testing.assert_frame_equal(other.users.reset_index(drop=True), ml.users.reset_index(drop=True), check_dtype=False)
    assert other.items.title.tolist() == ml.items.title.tolist()
    assert other.items.genres.tolist() == ml.items.genres.tolist()
    assert len(GENRES) == 19 and ml.items.genres[0] == ["Animation", "Children's", "Comedy"]


def test_missing_movielens_folder_names_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"u\.data.*u\.item.*u\.user"):
        load_movielens(tmp_path)


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


GOOD = {"member_id": 7, "task": "like", "prefix": "Member: 1\n", "candidate": "Movie: X\nAnswer:", "label": 1}


def test_bad_rows_are_listed_by_line_or_skipped(tmp_path):
    path = tmp_path / "records.jsonl"
    write_jsonl(
        path,
        [GOOD, {**GOOD, "label": 2}, {k: v for k, v in GOOD.items() if k != "prefix"}, "{not json", {**GOOD, "colour": "red"}, {**GOOD, "label": False}],
    )
    with pytest.raises(DataError) as err:
        load_records(path)
    message = str(err.value)
    assert str(path) in message and "4 bad rows" in message
    assert "line 2: label: expected 0 or 1" in message
    assert "line 3: prefix: missing field" in message
    assert "line 4: invalid JSON" in message
    assert "line 5: colour: unknown field" in message
    loaded = load_records(path, "skip")
    assert loaded.bad_rows == 4 and [r.label for r in loaded.records] == [1, 0]
    assert loaded.records[0].member_id == "7"


def test_parquet_round_trip_and_split_folder(tmp_path):
    records = [RankingRecord(**{**GOOD, "label": i % 2, "item_id": str(i), "ts": i}) for i in range(5)]
    for split in ("train", "val"):
        write_records(records, tmp_path / f"{split}.parquet")
    assert read_records(tmp_path / "train.parquet") == records
    assert load_records(tmp_path / "val.parquet").records == records
    with pytest.raises(DataError, match="split 'test' is missing"):
        load_record_splits(tmp_path)
    write_records(records, tmp_path / "test.parquet")
    assert set(load_record_splits(tmp_path)) == {"train", "val", "test"}


def test_records_source_flows_through_the_data_stage(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "val", "test"):
        write_jsonl(src / f"{split}.jsonl", [{**GOOD, "member_id": m, "label": m % 2} for m in range(6)] + [{**GOOD, "label": 9}])
    cfg = DataConfig(source="records", path=src, on_bad_rows="skip", tokenizer={"vocab_size": 300})
    metrics = build_data_artifact(cfg, tmp_path / "out")
    assert metrics["bad_rows"] == 3 and len(load_split(tmp_path / "out", "test")) == 6
    answer_token_ids(load_tokenizer(tmp_path / "out" / "tokenizer"))
    with pytest.raises(DataError, match="line 7: label"):
        build_data_artifact(cfg.model_copy(update={"on_bad_rows": "error"}), tmp_path / "out2")


def test_tokenizer_corpus_counts_each_prefix_once(splits):
    corpus = tokenizer_corpus(splits["train"])
    assert len(corpus) == len(set(corpus)) and any(t.endswith(" yes") for t in corpus)
    assert np.mean([len(t) for t in corpus]) > 20
