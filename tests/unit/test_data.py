"""Data: MovieLens tasks without leakage, determinism, both file layouts, row-validated records."""

from __future__ import annotations

import json
from itertools import groupby

import numpy as np
import pandas as pd
import pytest
from tokenizers import pre_tokenizers

from recslm.config import DataConfig
from recslm.data.build import build_data_artifact, load_split, tokenizer_corpus
from recslm.data.movielens import GENRES, bundled_path, build_ranking_splits, load_movielens, summarize, time_cutoffs
from recslm.data.prompts import HistoryItem, Item, MemberProfile, format_candidate, format_prefix, item_text
from recslm.data.records import RankingRecord, answer_text, load_record_splits, load_records, read_records, write_records
from recslm.data.tokenizer import answer_token_ids, load_tokenizer
from recslm.errors import DataError

# small but real: every member, all tasks; few candidates and sparse snapshots keep it fast
CFG = DataConfig(history_len=6, candidates_per_member=4, train_stride=24, eval_stride=16, max_eval_members=80)


@pytest.fixture(scope="module")
def splits(ml):
    return build_ranking_splits(ml, CFG)


def groups_of(records):
    """Consecutive runs of (member, task, prefix): how the builder lays out a group."""
    return [list(rows) for _, rows in groupby(records, key=lambda r: (r.member_id, r.task, r.prefix))]


# --------------------------------------------------------------------------- MovieLens tasks


def test_time_split_has_no_leakage(ml, splits):
    t1, t2 = time_cutoffs(ml.ratings, CFG)
    assert ml.ratings.timestamp.min() < t1 < t2 <= ml.ratings.timestamp.max()
    windows = {"train": (None, t1), "val": (t1, t2), "test": (t2, None)}
    for split, records in splits.items():
        lo, hi = windows[split]
        for r in records:
            assert r.history_max_ts < r.ts, (split, r)
            assert (lo is None or r.ts >= lo) and (hi is None or r.ts < hi), (split, r.ts)
    train, val, test = ([r.ts for r in splits[s]] for s in ("train", "val", "test"))
    assert max(train) < min(val) and max(val) < min(test)


def test_history_text_is_the_members_past(ml, splits):
    """Read each history line back out of the prompt and check it against the ratings table."""
    rated_at = {(u, m): t for u, m, t in zip(ml.ratings.user_id, ml.ratings.movie_id, ml.ratings.timestamp)}
    by_title: dict[str, list[int]] = {}  # a few MovieLens titles exist under two ids
    for title, movie in zip(ml.items.title, ml.items.movie_id):
        by_title.setdefault(title, []).append(movie)
    item = {m: Item(t, tuple(g)) for m, t, g in zip(ml.items.movie_id, ml.items.title, ml.items.genres)}
    ordered = ml.ratings.sort_values(["user_id", "timestamp", "movie_id"])
    per_member = {u: f for u, f in ordered.groupby("user_id")}
    checked = 0
    for split, records in splits.items():
        groups = groups_of(records)
        for group in groups[:: max(1, len(groups) // 150)]:
            member, first_ts = int(group[0].member_id), min(r.ts for r in group)
            lines = group[0].prefix.split("History:\n")[1].rstrip("\n").split("\n")
            for line in lines:
                title = line.rsplit(" | ", 2)[0]
                when = [rated_at[(member, m)] for m in by_title[title] if (member, m) in rated_at]
                assert when and min(when) < first_ts, f"{split}: member {member} sees {title!r} rated at {when} >= {first_ts}"
            # and exactly the last history_len ratings strictly before the first candidate, oldest first
            past = per_member[member][per_member[member].timestamp < first_ts].tail(CFG.history_len)
            expected = [f"{item_text(item[m])} | {r}" for m, r in zip(past.movie_id, past.rating)]
            assert lines == expected
            assert group[0].history_max_ts == past.timestamp.max()
            checked += 1
    assert checked > 300


def test_groups_share_one_prefix_and_follow_the_tokenization_contract(splits):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert set(splits) == {"train", "val", "test"} and all(splits.values())
    for split, records in splits.items():
        groups = groups_of(records)
        keys = [(g[0].member_id, g[0].task, g[0].prefix) for g in groups]
        assert len(keys) == len(set(keys)), f"{split}: a group's candidates are not contiguous"
        for group in groups:
            assert 0 < len(group) <= CFG.candidates_per_member
            assert len({r.history_max_ts for r in group}) == 1
            assert len({r.item_id for r in group}) == len(group)
        for r in records[:: max(1, len(records) // 500)]:
            assert r.prefix.endswith("\n") and not r.candidate[0].isspace() and r.candidate.endswith("Answer:")
            # a byte-level BPE never merges across the boundary: the prefix is a whole number of pre-tokens
            cuts = {end for _, (_, end) in byte_level.pre_tokenize_str(r.prefix + r.candidate + answer_text(r.label))}
            assert len(r.prefix) in cuts and len(r.prefix + r.candidate) in cuts


def test_records_are_ordered_by_member_task_snapshot(splits):
    assert set(splits) == {"train", "val", "test"} and all(splits.values())
    for split, records in splits.items():
        order = [(int(g[0].member_id), CFG.tasks.index(g[0].task), g[0].history_max_ts) for g in groups_of(records)]
        assert order == sorted(order), split


def test_labels_match_the_ratings(ml, splits):
    rating = {(str(u), str(m)): r for u, m, r in zip(ml.ratings.user_id, ml.ratings.movie_id, ml.ratings.rating)}
    rated_at = {(str(u), str(m)): t for u, m, t in zip(ml.ratings.user_id, ml.ratings.movie_id, ml.ratings.timestamp)}
    for split, records in splits.items():
        for r in records:
            if r.task == "like":
                assert r.label == int(rating[(r.member_id, r.item_id)] >= 4)
            elif r.task == "love":
                assert r.label == int(rating[(r.member_id, r.item_id)] == 5)
            if r.task in ("like", "love"):
                assert rated_at[(r.member_id, r.item_id)] == r.ts
        next_groups = [g for g in groups_of(records) if g[0].task == "next"]
        assert next_groups, split
        for group in next_groups:
            assert sum(r.label for r in group) == 1 and len(group) == CFG.candidates_per_member
            for r in group:
                if r.label:
                    assert rated_at[(r.member_id, r.item_id)] == r.ts
    # like and love share candidates; the positive rate is plausible for MovieLens
    stats = summarize(splits)
    assert stats["test"]["like"]["records"] == stats["test"]["love"]["records"]
    assert 0.4 < stats["train"]["like"]["positive_rate"] < 0.7 and stats["train"]["next"]["positive_rate"] == 0.25


def test_next_negatives_use_nothing_after_the_decision(splits):
    """The no-look-ahead rule, rebuilt from the raw parquet files (not the loader) and checked on
    every next record: a negative existed at its decision time t (someone rated it before t),
    and its member had not rated it before t; the positive is the item rated at t."""
    raw = pd.read_parquet(bundled_path() / "MovieLens100k_data.parquet")
    first_rated = raw.groupby("movie_id").timestamp.min().to_dict()
    member_rated = {(str(u), str(m)): t for u, m, t in zip(raw.user_id, raw.movie_id, raw.timestamp)}
    future_negatives = 0
    for split, records in splits.items():
        for group in groups_of([r for r in records if r.task == "next"]):
            t = group[0].ts
            assert all(r.ts == t for r in group)
            for r in group:
                rated_at = member_rated.get((r.member_id, r.item_id))
                if r.label:
                    assert rated_at == t, r
                    continue
                assert first_rated[int(r.item_id)] < t, (split, r.item_id, t)  # it existed
                assert rated_at is None or rated_at >= t, (split, r.item_id, t)  # not rated by the member before t
                future_negatives += rated_at is not None
    # the future does not exclude items: some negatives are items the member rates later
    assert future_negatives > 0


def test_next_positions_are_not_guessable_from_the_order(splits):
    positions = [next(i for i, r in enumerate(g) if r.label) for g in groups_of(splits["train"]) if g[0].task == "next"]
    assert len(set(positions)) == CFG.candidates_per_member


def test_deterministic_for_a_seed(ml, splits):
    again = build_ranking_splits(ml, CFG)
    assert all([r.model_dump() for r in again[s]] == [r.model_dump() for r in splits[s]] for s in splits)
    other = build_ranking_splits(ml, CFG.model_copy(update={"seed": 1}))

    def negatives(sp):
        return [r.item_id for r in sp["train"] if r.task == "next" and r.label == 0]

    assert negatives(other) != negatives(splits)
    # like/love candidates are the member's real next items: not random, so unchanged by the seed
    assert [r.item_id for r in other["train"] if r.task == "like"] == [r.item_id for r in splits["train"] if r.task == "like"]


def test_tasks_and_caps_are_honoured(ml, splits):
    cfg = CFG.model_copy(update={"tasks": ["love", "love"], "max_train_groups": 50, "max_eval_members": 30})
    out = build_ranking_splits(ml, cfg)
    assert {r.task for s in out.values() for r in s} == {"love"}
    assert len(groups_of(out["train"])) == 50
    val_members, test_members = ({r.member_id for r in out[s]} for s in ("val", "test"))
    assert len(val_members | test_members) == 30
    assert len(val_members & test_members) >= 0.8 * min(len(val_members), len(test_members))
    # the cap keeps a subset of the uncapped members
    assert test_members <= {r.member_id for r in build_ranking_splits(ml, cfg.model_copy(update={"max_eval_members": None}))["test"]}


def test_eval_splits_do_not_depend_on_training_options(ml, splits):
    """Teachers and students trained with different train options are scored on the same test set."""
    other = build_ranking_splits(ml, CFG.model_copy(update={"train_stride": 7, "max_train_groups": 100}))
    assert len(groups_of(other["train"])) == 100
    for split in ("val", "test"):
        assert [r.model_dump() for r in other[split]] == [r.model_dump() for r in splits[split]]


def test_eval_snapshots_follow_eval_stride(ml):
    one = build_ranking_splits(ml, CFG.model_copy(update={"eval_stride": 10_000, "tasks": ["like"]}))
    many = build_ranking_splits(ml, CFG.model_copy(update={"eval_stride": 4, "tasks": ["like"]}))
    per_member = lambda sp: pd.Series([g[0].member_id for g in groups_of(sp["test"])]).value_counts()  # noqa: E731
    assert per_member(one).max() == 1  # one snapshot per member: the first interaction in the window
    assert per_member(many).max() > 1


# --------------------------------------------------------------------------- reading MovieLens


def test_bundled_copy_carries_its_terms(ml):
    readme = (bundled_path() / "README.md").read_text()
    assert "F. Maxwell Harper and Joseph A. Konstan. 2015" in readme and "commercial" in readme
    assert len(ml.ratings) == 100_000 and len(ml.users) == 943 and len(ml.items) == 1682
    assert list(ml.ratings.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    assert list(ml.items.columns) == ["movie_id", "title", "genres"]
    assert list(ml.users.columns) == ["user_id", "age", "gender", "occupation"]


def test_original_ml100k_layout_reads_the_same(ml, tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    ml.ratings.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    raw_items = pd.read_parquet(bundled_path() / "MovieLens100k_items.parquet")
    assert list(raw_items.columns[5:]) == GENRES and len(raw_items.columns) == 24
    raw_items.to_csv(folder / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    raw_users = pd.read_parquet(bundled_path() / "MovieLens100k_users.parquet")
    raw_users.to_csv(folder / "u.user", sep="|", header=False, index=False)
    assert any(not t.isascii() for t in raw_items.movie_title)  # the latin-1 encoding is exercised
    other = load_movielens(folder)
    pd.testing.assert_frame_equal(other.ratings, ml.ratings)
    pd.testing.assert_frame_equal(other.users, ml.users, check_dtype=False)
    assert other.items.movie_id.tolist() == ml.items.movie_id.tolist()
    assert other.items.title.tolist() == ml.items.title.tolist()
    assert other.items.genres.tolist() == ml.items.genres.tolist()
    assert ml.items.genres[0] == ["Animation", "Children's", "Comedy"]


def test_missing_movielens_folder_names_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"MovieLens100k_data\.parquet.*u\.data.*u\.item.*u\.user"):
        load_movielens(tmp_path / "nowhere")


def test_ratings_of_unknown_movies_are_a_clear_error(ml, tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    ml.ratings.assign(movie_id=ml.ratings.movie_id.where(ml.ratings.index != 5, 99_999)).to_csv(
        folder / "u.data", sep="\t", header=False, index=False
    )
    pd.read_parquet(bundled_path() / "MovieLens100k_items.parquet").to_csv(folder / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    pd.read_parquet(bundled_path() / "MovieLens100k_users.parquet").to_csv(folder / "u.user", sep="|", header=False, index=False)
    with pytest.raises(DataError, match=r"u\.data: 1 ratings have a movie_id missing from .*u\.item.*99999"):
        load_movielens(folder)
    raw_items = pd.read_parquet(bundled_path() / "MovieLens100k_items.parquet").drop(columns=["Western"])
    raw_items.to_csv(folder / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    with pytest.raises(DataError, match=r"u\.item: expected 24 '\|'-separated columns .*found 23"):
        load_movielens(folder)


# --------------------------------------------------------------------------- prompts


def test_prompt_texts_are_compact_lines():
    member = MemberProfile(24, "M", "technician")
    history = [HistoryItem(Item("Toy Story (1995)", ("Animation", "Comedy")), 5), HistoryItem(Item("Odd\nTitle", ()), 2)]
    prefix = format_prefix("like", member, history)
    assert prefix == (
        "Task: will the member rate this movie 4 stars or more?\nMember: 24, M, technician\nHistory:\n"
        "Toy Story (1995) | Animation, Comedy | 5\nOdd Title | unknown | 2\n"
    )
    assert format_candidate(Item("Heat (1995)", ("Action", "Crime", "Thriller"))) == "Movie: Heat (1995) | Action, Crime, Thriller\nAnswer:"
    with pytest.raises(ValueError, match="unknown task 'hate'"):
        format_prefix("hate", member, history)


# --------------------------------------------------------------------------- records files


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


GOOD = {"member_id": 7, "task": "like", "prefix": "Member: 1\n", "candidate": "Movie: X\nAnswer:", "label": 1}


def test_bad_rows_are_listed_by_line_or_skipped(tmp_path):
    path = tmp_path / "records.jsonl"
    rows = [
        GOOD,
        {**GOOD, "label": 2},
        {k: v for k, v in GOOD.items() if k != "prefix"},
        "{not json",
        "",  # blank lines are ignored but still counted in line numbers
        {**GOOD, "colour": "red"},
        {**GOOD, "label": False},
        {**GOOD, "task": ""},
    ]
    write_jsonl(path, rows)
    with pytest.raises(DataError) as err:
        load_records(path)
    message = str(err.value)
    assert str(path) in message and "5 bad rows" in message
    assert "line 2: label: expected 0 or 1" in message
    assert "line 3: prefix: missing field" in message
    assert "line 4: invalid JSON" in message
    assert "line 6: colour: unknown field" in message
    assert "line 8: task:" in message
    assert "line 1:" not in message and "line 7:" not in message
    loaded = load_records(path, "skip")
    assert loaded.bad_rows == 5 and [r.label for r in loaded.records] == [1, 0] and loaded.source == path
    assert loaded.records[0].member_id == "7"


def test_many_bad_rows_are_capped_in_the_message(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [{**GOOD, "label": 3}] * 25)
    with pytest.raises(DataError, match=r"(?s)25 bad rows.*line 10: label.*and 15 more") as err:
        load_records(path)
    assert "line 11:" not in str(err.value)
    with pytest.raises(DataError, match="no valid records"):
        load_records(path, "skip")


def test_unknown_format_and_missing_file_name_the_file(tmp_path):
    csv = tmp_path / "records.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataError, match=r"records\.csv: unknown records format '\.csv'"):
        load_records(csv)
    with pytest.raises(DataError, match=r"nope\.jsonl: records file not found"):
        load_records(tmp_path / "nope.jsonl")


def test_parquet_round_trip_and_split_folder(tmp_path):
    records = [RankingRecord(**{**GOOD, "label": i % 2, "item_id": str(i), "ts": i, "history_max_ts": None}) for i in range(5)]
    for split in ("train", "val"):
        write_records(records, tmp_path / f"{split}.parquet")
    assert read_records(tmp_path / "train.parquet") == records
    assert [r.ts for r in read_records(tmp_path / "train.parquet")] == [0, 1, 2, 3, 4]  # ints stay ints
    assert load_records(tmp_path / "val.parquet").records == records
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed into place
    with pytest.raises(DataError, match=r"split 'test' is missing"):
        load_record_splits(tmp_path)
    write_records(records, tmp_path / "test.parquet")
    loads = load_record_splits(tmp_path)
    assert set(loads) == {"train", "val", "test"} and loads["test"].records == records


def test_external_parquet_rows_are_validated_by_row_number(tmp_path):
    path = tmp_path / "ext.parquet"
    pd.DataFrame([GOOD, {**GOOD, "label": 5}, {**GOOD, "member_id": 8}]).to_parquet(path)
    with pytest.raises(DataError, match=r"(?s)1 bad row of 3.*row 2: label: expected 0 or 1"):
        load_records(path)
    assert [r.member_id for r in load_records(path, "skip").records] == ["7", "8"]
    with pytest.raises(DataError, match="not a records file written by recslm"):
        read_records(path)


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


def test_item_stats_use_only_ratings_before_the_decision():
    from recslm.data.movielens import ItemHistory
    from recslm.data.prompts import Item, format_candidate

    ml = load_movielens(None)
    history = ItemHistory(ml.ratings)
    r = ml.ratings
    for movie, when in [(50, 880_000_000), (1, 890_000_000), (1500, 893_000_000), (99999, 0)]:
        past = r[(r.movie_id == movie) & (r.timestamp < when)]
        stats = history.before(movie, when)
        assert stats.count == len(past)
        assert stats.mean == pytest.approx(past.rating.mean() if len(past) else 0.0)
    # every candidate shows its stats as of its group's decision time (the first candidate's time)
    cfg = DataConfig(history_len=4, candidates_per_member=4, train_stride=64, eval_stride=32, max_eval_members=30, item_stats=True)
    splits = build_ranking_splits(ml, cfg)
    items = {int(m): Item(str(t), tuple(g)) for m, t, g in zip(ml.items.movie_id, ml.items.title, ml.items.genres)}
    groups: dict[tuple, list[RankingRecord]] = {}
    for rec in splits["test"] + splits["train"][:500]:
        groups.setdefault((rec.member_id, rec.task, rec.prefix), []).append(rec)
    for rows in groups.values():
        decided = min(x.ts for x in rows)
        for x in rows:
            assert x.candidate == format_candidate(items[int(x.item_id)], history.before(int(x.item_id), decided))
    plain = build_ranking_splits(ml, cfg.model_copy(update={"item_stats": False}))
    assert "avg" not in plain["test"][0].candidate and " | " in plain["test"][0].candidate


def test_prompt_options_render_decision_time_stats_and_the_history_mean(ml):
    from recslm.data.prompts import ItemStats, log2_scale, stats_text

    assert [log2_scale(n) for n in (0, 1, 2, 3, 4, 1000, 5000)] == [0, 1, 2, 2, 3, 10, 10]
    assert stats_text(ItemStats(130, 3.74, 9), "scale") == "pop 8, avg 3.7, recent 4"
    assert stats_text(ItemStats(130, 3.74, 9)) == "popular, avg 3.5, active"
    assert stats_text(ItemStats(130, 3.74)) == "popular, avg 3.5"  # no recent count asked for: unchanged
    cfg = CFG.model_copy(update={"item_recent": True, "member_summary": True, "stats_style": "scale", "max_eval_members": 10})
    splits = build_ranking_splits(ml, cfg)
    raw = ml.ratings
    for r in splits["val"][:200]:
        when = min(x.ts for x in splits["val"] if (x.member_id, x.task, x.prefix) == (r.member_id, r.task, r.prefix))
        item = raw[(raw.movie_id == int(r.item_id)) & (raw.timestamp < when)]
        recent = int((item.timestamp >= when - 30 * 86_400).sum())
        assert r.candidate.endswith(f"recent {log2_scale(recent)}\nAnswer:"), r.candidate
        shown = [int(line.rsplit("| ", 1)[1]) for line in r.prefix.split(":\n", 3)[-1].splitlines()]
        assert f"History (avg {round(2 * sum(shown) / len(shown)) / 2:.1f}):" in r.prefix


def test_candidate_match_counts_the_shown_history_items_sharing_a_genre(ml):
    """data.candidate_match: every candidate's "similar N, yours avg X" is what its own prompt's
    history lines give (genres shared with the candidate, the member's mean rating of those)."""
    from recslm.data.prompts import Item, TasteMatch, format_candidate, match_text, taste_match

    assert match_text(TasteMatch(0, 0.0)) == "similar 0" and match_text(TasteMatch(3, 13 / 3)) == "similar 3, yours avg 4.3"
    heat = Item("Heat (1995)", ("Action", "Crime"))
    history = [HistoryItem(Item("A", ("Crime",)), 5), HistoryItem(Item("B", ("Comedy",)), 1), HistoryItem(Item("C", ("Action", "Crime")), 4)]
    assert taste_match(heat, history) == TasteMatch(2, 4.5)
    assert format_candidate(heat, match=taste_match(heat, history)) == "Movie: Heat (1995) | Action, Crime | similar 2, yours avg 4.5\nAnswer:"
    splits = build_ranking_splits(ml, CFG.model_copy(update={"candidate_match": True, "stats_style": "rank_scale", "item_recent": True}))
    plain = build_ranking_splits(ml, CFG.model_copy(update={"stats_style": "rank_scale", "item_recent": True}))
    checked = 0
    for split in ("train", "val", "test"):
        assert len(splits[split]) == len(plain[split])
        for r, p in list(zip(splits[split], plain[split]))[:400]:
            assert r.prefix == p.prefix and r.candidate.startswith(p.candidate.removesuffix("\nAnswer:") + " | similar ")
            genres = set(r.candidate.split(" | ")[1].split(", "))
            shown = [line.rsplit(" | ", 2) for line in r.prefix.split("History:\n", 1)[1].splitlines()]
            ratings = [int(rating) for _, line_genres, rating in shown if genres & set(line_genres.split(", "))]
            expected = match_text(TasteMatch(len(ratings), sum(ratings) / len(ratings) if ratings else 0.0))
            assert r.candidate.endswith(f" | {expected}\nAnswer:"), (r.candidate, shown)
            checked += 1
    assert checked == 1200


def test_popularity_rank_reads_as_top_percent_buckets():
    """stats_style rank and rank_scale: how a rank and its neighbours read."""
    from recslm.data.prompts import ItemStats, stats_text, top_percent

    assert [top_percent(s) for s in (0.0, 0.009, 0.01, 0.049, 0.2, 0.74, 0.99)] == [1, 1, 2, 5, 35, 75, 100]
    assert stats_text(ItemStats(130, 3.74, 9, 0.03), "rank") == "top 5%, avg 3.5, active"
    assert stats_text(ItemStats(0, 0.0, 0, 1.0), "rank") == "new"
    assert stats_text(ItemStats(130, 3.74, 9, 0.03), "rank_scale") == "top 5%, avg 3.7, recent 4"
    assert stats_text(ItemStats(0, 0.0, 0, 1.0), "rank_scale") == "new"


@pytest.mark.parametrize("style", ["rank", "rank_scale"])
def test_popularity_rank_is_among_the_items_rated_before_the_decision_rebuilt_from_raw_ratings(ml, style):
    """The rank styles: "top N%" of the items rated before the group's decision time, checked
    against a brute-force count over the raw ratings (nothing at or after the decision)."""
    from recslm.data.prompts import log2_scale, top_percent

    cfg = CFG.model_copy(update={"item_recent": True, "stats_style": style, "max_eval_members": 10})
    splits = build_ranking_splits(ml, cfg)
    raw = ml.ratings
    checked = 0
    for r in splits["val"][:120] + splits["train"][:80]:
        split = splits["val"] if r in splits["val"][:120] else splits["train"]
        when = min(x.ts for x in split if (x.member_id, x.task, x.prefix) == (r.member_id, r.task, r.prefix))
        counts = raw[raw.timestamp < when].groupby("movie_id").size()
        mine = int(counts.get(int(r.item_id), 0))
        shown = r.candidate.rsplit(" | ", 1)[1].split(",")[0]
        if mine == 0:
            assert shown.startswith("new"), r.candidate
            continue
        share = float((counts > mine).sum() / len(counts))
        assert shown == f"top {top_percent(share)}%", (r.candidate, share)
        if style == "rank_scale":  # the mean to a tenth and the 30-day count on the log2 scale, from the same raw ratings
            item = raw[(raw.movie_id == int(r.item_id)) & (raw.timestamp < when)]
            recent = int((item.timestamp >= when - 30 * 86_400).sum())
            assert r.candidate.endswith(f", avg {item.rating.mean():.1f}, recent {log2_scale(recent)}\nAnswer:"), r.candidate
        checked += 1
    assert checked > 100
