"""The generative task's pieces: config refusals, data artifact, the sentiment metric, selection and gate on val loss."""

from __future__ import annotations

import pytest

from recslm.config import load_config
from recslm.errors import ConfigError
from recslm.select import LossCandidate, teacher_gate, select_smallest_by_loss
from recslm.summary import TeacherAUC, model_record

GENERATIVE = ["data.source=reviews", "registry.enabled=false"]


def test_the_task_is_derived_from_the_data_source():
    assert load_config(None, GENERATIVE).task == "generative"
    assert load_config(None).task == "ranking"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("registry.objective=auc_mean", "registry.objective"),
        ("distill.teacher_logits=topk", "distill.teacher_logits"),
        ("teacher.train.eval_steps=10", "teacher.train.best_metric"),
        ("prune.redistill={max_steps: 4, eval_steps: 2}", "prune.redistill.best_metric"),
        ("teacher.foundation={}", "teacher.foundation"),
    ],
)
def test_what_the_generative_task_does_not_do_is_refused_naming_the_field(override, field):
    students = ["students=[{name: s, arch: {family: llama, hidden_size: 32, num_layers: 1, num_heads: 4, num_kv_heads: 2, intermediate_size: 64}}]"]
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [*GENERATIVE, *students, override])


def test_adding_the_generative_settings_kept_every_ranking_key():
    """New fields at their defaults leave the data, evaluate and select keys as they were."""
    from recslm.stages import data, evaluate, select

    cfg = load_config(None)
    assert "max_records" not in data.key(cfg) and "max_response_chars" not in data.key(cfg)
    assert "generate_records" not in evaluate.key(cfg, "m") and "max_val_loss_increase_pct" not in select.key(cfg)
    changed = load_config(None, ["evaluate.max_new_tokens=8"])
    assert evaluate.key(changed, "m")["max_new_tokens"] == 8


def test_the_data_artifact_splits_by_product_and_keeps_the_rating(tmp_path):
    from recslm.data.generation_artifact import build_generation_artifact, load_generation_split

    cfg = load_config(None, [*GENERATIVE, "data.max_records=200", "data.tokenizer.vocab_size=400", "data.max_response_chars=100"])
    metrics = build_generation_artifact(cfg.data, tmp_path)
    splits = {s: load_generation_split(tmp_path, s) for s in ("train", "val", "test")}
    assert {s: len(r) for s, r in splits.items()} == {s: metrics["splits"][s]["records"] for s in splits}
    products = {s: {r.item_id for r in recs} for s, recs in splits.items()}
    assert not products["train"] & products["val"] and not products["train"] & products["test"] and not products["val"] & products["test"]
    for rec in splits["val"]:
        assert rec.rating in range(1, 6) and f"Rating: {rec.rating} of 5" in rec.prompt and len(rec.response) <= 100


def test_a_ranking_artifact_is_not_read_as_generation_records(tmp_path):
    from recslm.data.generation_artifact import load_generation_split
    from recslm.data.records import write_records
    from recslm.errors import DataError
    from tests.helpers import synthetic_records

    write_records(synthetic_records(4), tmp_path / "records" / "val.parquet")
    with pytest.raises(DataError, match="missing columns"):
        load_generation_split(tmp_path, "val")


def test_sentiment_agreement_is_balanced_accuracy_against_the_rating():
    from recslm.data.reviews import build_review_splits
    from recslm.evaluate.sentiment import SentimentJudge

    splits = build_review_splits(max_records=None)
    judge = SentimentJudge.fit(splits["train"])
    test = splits["test"]
    ratings = [r.rating for r in test]
    reference = judge.agreement([r.response for r in test], ratings)
    assert reference > 0.7  # the judge reads the reference reviews well above chance
    positive = next(r.response for r in splits["train"] if r.rating == 5)
    assert judge.agreement([positive] * len(test), ratings) == pytest.approx(0.5)  # a writer that ignores the rating
    flipped = [6 - r for r in ratings]  # reviews judged against the opposite ratings
    assert judge.agreement([r.response for r in test], flipped) < 0.5


def _record(name, role, val_loss, loss=None, params=100):
    metrics = {"task": "generative", "params": params, "params_non_embedding": params // 2, "bytes": 4 * params, "loss": loss or val_loss, "val_loss": val_loss}
    return model_record(name, role, metrics, "k", TeacherAUC(val_loss=2.0))


def test_selection_on_val_loss_takes_the_smallest_within_the_bar():
    candidates = [LossCandidate(name="big", params=300, val_loss=2.05), LossCandidate(name="small", params=100, val_loss=2.5), LossCandidate(name="mid", params=200, val_loss=2.19)]
    chosen = select_smallest_by_loss(candidates, 2.0, 10.0)
    assert chosen.winner == "mid" and [r["verdict"] for r in chosen.rows] == ["below bar", "selected", "qualifies"]
    assert select_smallest_by_loss(candidates, 2.0, 1.0).winner is None
    assert "val loss" in chosen.table() and "select.max_val_loss_increase_pct=10" in chosen.bar()


def test_the_generative_gate_compares_val_loss_with_the_best_sft_student():
    teacher = _record("teacher", "teacher", 2.0)
    assert teacher.val_loss_increase_pct == 0.0
    assert teacher_gate([teacher, _record("a-sft", "sft_baseline", 2.4), _record("b-sft", "sft_baseline", 2.2)]).passed
    failing = teacher_gate([teacher, _record("a-sft", "sft_baseline", 1.9)])
    assert not failing.passed and failing.best_sft == "a-sft" and "FAILS" in failing.table()


def _entry(version, val_loss, increase, params=100, bytes_=400):
    from recslm.select import RegistryEntry

    return RegistryEntry(version=version, auc_mean=float("nan"), auc_delta_pct=float("nan"), task="generative", val_loss=val_loss,
                         val_loss_increase_pct=increase, params=params, bytes=bytes_)  # fmt: skip


@pytest.mark.parametrize(
    ("candidate", "champion", "objective", "verdict"),
    [
        (_entry("2", 2.1, 5.0), None, "val_loss", "champion"),  # first within the bar
        (_entry("2", 2.5, 25.0), None, "val_loss", "challenger"),  # above the val-loss bar (10 %)
        (_entry("2", 2.05, 2.5), _entry("1", 2.1, 5.0), "val_loss", "champion"),  # lower val loss
        (_entry("2", 2.15, 7.5), _entry("1", 2.1, 5.0), "val_loss", "challenger"),  # higher val loss
        (_entry("2", 2.11, 5.5, bytes_=200), _entry("1", 2.1, 5.0), "bytes", "champion"),  # smaller at equal quality (within 1 %)
        (_entry("2", 2.2, 9.0, bytes_=200), _entry("1", 2.1, 5.0), "bytes", "challenger"),  # smaller but 4.8 % worse
        (_entry("2", 2.05, 2.5), _entry("1", 2.1, 5.0), "auc_mean", "challenger"),  # no AUC to compare
    ],
)
def test_the_generative_promotion_policy_reads_val_loss(candidate, champion, objective, verdict):
    from recslm.select import decide_promotion

    decided = decide_promotion(candidate, champion, max_auc_drop_pct=1.0, objective=objective, quality_tolerance_pct=1.0, min_gain_pct=0.0,
                               max_val_loss_increase_pct=10.0)  # fmt: skip
    assert decided.verdict == verdict, decided.reason
