"""Generative path: review records, response SFT, token-level KD, on-policy sampling, phases."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import recslm.train.generative as gen
from recslm.config import ArchSpec, DistillPhase, SamplingConfig, TrainConfig
from recslm.data.reviews import COLUMNS, GenerationRecord, build_review_splits, load_reviews, texts_of
from recslm.data.tokenizer import train_bpe_tokenizer
from recslm.errors import ConfigError, DataError, TokenizerError
from recslm.models.factory import build_model
from tests.helpers import require_shared, shared_data

# the original data set lives in the shared folder beside the checkout (../shared, as CI has
# it), or wherever RECSLM_SHARED points
SHARED_REVIEWS = shared_data("clothing-reviews/WomensClothingE-CommerceReviews.parquet")
SPEC = ArchSpec(family="llama", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)


def quick(steps: int, batch: int = 4, lr: float = 3e-3) -> TrainConfig:
    return TrainConfig(max_steps=steps, groups_per_batch=batch, learning_rate=lr, warmup_ratio=0.0, save_steps=1000, logging_steps=1000)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Hidden-32 models gain nothing from intra-op threads, and on a busy 2-core machine the
    thread handoffs cost more than the math (measured: 25 s vs 50 s for this file)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[GenerationRecord]]:
    return build_review_splits(max_records=48, max_response_chars=60)


@pytest.fixture(scope="module")
def tokenizer(splits):
    return train_bpe_tokenizer(texts_of(splits["train"] + splits["val"]), vocab_size=400)


@pytest.fixture(scope="module")
def teacher_run(splits, tokenizer, tmp_path_factory):
    """A tiny teacher trained with response SFT, and its validation loss before and after."""
    model = build_model(SPEC, tokenizer, seed=0)
    before = gen.response_loss(model, tokenizer, splits["val"])
    report = gen.train_response_model(model, tokenizer, splits["train"], quick(24, batch=8, lr=5e-3), tmp_path_factory.mktemp("sft"), seed=0)
    return SimpleNamespace(model=model.eval(), before=before, after=gen.response_loss(model, tokenizer, splits["val"]), report=report)


# --------------------------------------------------------------------------- data


def test_bundled_reviews_split_by_product_deterministically():
    splits = build_review_splits(max_response_chars=120)
    products = {name: {r.item_id for r in records} for name, records in splits.items()}
    assert all(splits.values()) and sum(map(len, splits.values())) == 4000  # every bundled row has a text
    assert not (products["train"] & products["val"]) and not (products["train"] & products["test"]) and not (products["val"] & products["test"])
    responses = [r.response for records in splits.values() for r in records]
    assert all(r.startswith(" ") and len(r) <= 120 for r in responses)
    assert any(": " in r for r in responses)  # titled reviews read " title: text"
    assert splits == build_review_splits(max_response_chars=120)
    capped = build_review_splits(max_records=5, max_response_chars=120)
    assert [len(v) for v in capped.values()] == [5, 5, 5]
    first = capped["train"][0]
    assert "Rating:" in first.prompt and "Recommends it:" in first.prompt and first.prompt.endswith("Review:")


def test_loader_reads_a_user_file_and_names_missing_columns(tmp_path):
    frame = load_reviews().head(20)
    (tmp_path / "ok").mkdir()
    frame.to_csv(tmp_path / "ok" / "Womens Clothing E-Commerce Reviews.csv")  # the original Kaggle layout
    assert len(load_reviews(tmp_path / "ok")) == 20
    bad = tmp_path / "bad.parquet"
    frame.drop(columns=["Rating"]).to_parquet(bad)
    with pytest.raises(DataError, match=r"bad\.parquet: missing column \['Rating'\]"):
        load_reviews(bad)
    with pytest.raises(DataError, match="not found"):
        load_reviews(tmp_path / "nowhere.parquet")
    frame.assign(Rating=["x"] * 20).to_parquet(bad)
    with pytest.raises(DataError, match="'Rating': expected integers"):
        load_reviews(bad)


def test_original_parquet_loads_with_all_texted_rows():
    frame = load_reviews(require_shared(SHARED_REVIEWS))
    assert len(frame) == 22641 and list(frame.columns) == list(COLUMNS)  # 23,486 rows, 845 without text


# --------------------------------------------------------------------------- tokens and losses


def test_responses_end_in_eos_and_only_response_tokens_are_targets(splits, tokenizer):
    examples = gen.encode_records(tokenizer, splits["train"][:5])
    assert all(e.response_ids[-1] == tokenizer.eos_token_id for e in examples)
    # pad = eos, as with many pretrained tokenizers: the mask must still count every EOS
    packed = gen.pack(examples, pad_id=tokenizer.eos_token_id)
    for row, e in enumerate(examples):
        assert packed.targets[row][packed.predict[row]].tolist() == list(e.response_ids)
    with pytest.raises(TokenizerError, match="no eos_token"):
        gen.eos_token_id(SimpleNamespace(eos_token_id=None, name_or_path="tok-without-eos"))


def test_response_sft_lowers_validation_loss(teacher_run):
    assert teacher_run.report.steps == 24
    print(f"response loss {teacher_run.before:.3f} -> {teacher_run.after:.3f}")
    assert teacher_run.after < teacher_run.before - 0.8, (teacher_run.before, teacher_run.after)


def test_kd_loss_vanishes_for_a_copy_of_the_teacher(splits, tokenizer, teacher_run):
    examples = gen.encode_records(tokenizer, splits["train"][:6])
    twin, stranger = copy.deepcopy(teacher_run.model), build_model(SPEC, tokenizer, seed=7)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        settings = gen.LossSettings(kind=kind)
        same, _ = gen.generative_loss(twin, teacher_run.model, examples, settings, tokenizer.pad_token_id)
        other, _ = gen.generative_loss(stranger, teacher_run.model, examples, settings, tokenizer.pad_token_id)
        assert abs(same.item()) < 1e-5 and other.item() > 0.05, (kind, same.item(), other.item())


def test_padded_output_layers_of_different_widths_are_compared_on_the_tokenizers_tokens(splits, tokenizer, teacher_run):
    """Real checkpoints pad their heads past the tokenizer, each its own way: the KD loss and the
    divergence read the first len(tokenizer) logits only, so padding changes nothing."""
    examples = gen.encode_records(tokenizer, splits["train"][:6])
    student = build_model(SPEC, tokenizer, seed=7)
    padded_teacher, padded_student = copy.deepcopy(teacher_run.model), copy.deepcopy(student)
    padded_teacher.resize_token_embeddings(len(tokenizer) + 24)
    padded_student.resize_token_embeddings(len(tokenizer) + 8)
    with torch.no_grad():  # padding rows that would dominate the softmax if they were read
        padded_teacher.get_output_embeddings().weight[len(tokenizer):] = 5.0
        padded_student.get_output_embeddings().weight[len(tokenizer):] = -5.0
    settings = gen.LossSettings(kind="forward_kl", vocab_size=len(tokenizer))
    plain, _ = gen.generative_loss(student, teacher_run.model, examples, settings, tokenizer.pad_token_id)
    padded, _ = gen.generative_loss(padded_student, padded_teacher, examples, settings, tokenizer.pad_token_id)
    assert padded.item() == pytest.approx(plain.item(), rel=1e-5)
    assert gen.teacher_divergence(padded_student, padded_teacher, tokenizer, splits["val"][:8]) == pytest.approx(
        gen.teacher_divergence(student, teacher_run.model, tokenizer, splits["val"][:8]), rel=1e-5
    )
    short = build_model(SPEC, tokenizer, seed=3)
    short.resize_token_embeddings(len(tokenizer) - 1)
    with pytest.raises(TokenizerError, match="cannot score every token"):
        gen.distill_generative_phases(short, teacher_run.model, tokenizer, splits["train"], [DistillPhase(loss="forward_kl", train=quick(1))], output_dir=Path("/nonexistent"), seed=0)


def test_forward_kl_training_moves_the_student_towards_the_teacher(splits, tokenizer, teacher_run, tmp_path):
    student = build_model(SPEC, tokenizer, seed=1)
    before = gen.teacher_divergence(student, teacher_run.model, tokenizer, splits["val"])
    phases = [DistillPhase(loss="forward_kl", train=quick(16, lr=5e-3))]
    (report,) = gen.distill_generative_phases(student, teacher_run.model, tokenizer, splits["train"], phases, output_dir=tmp_path, seed=0)
    after = gen.teacher_divergence(student, teacher_run.model, tokenizer, splits["val"])
    assert report.steps == 16 and report.generated_examples == 0
    print(f"forward KL to the teacher {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before, (before, after)


# --------------------------------------------------------------------------- on-policy sampling


def test_on_policy_picks_are_rounded_and_seeded():
    assert gen.on_policy_indices(4, 0.5, seed=0, step=3) == gen.on_policy_indices(4, 0.5, seed=0, step=3)
    assert len(gen.on_policy_indices(4, 0.5, 0, 0)) == 2 and len(gen.on_policy_indices(2, 0.25, 0, 0)) == 1  # 0.5 rounds up
    assert gen.on_policy_indices(8, 1.0, 0, 0) == list(range(8)) and gen.on_policy_indices(8, 0.0, 0, 0) == []
    assert len({tuple(gen.on_policy_indices(8, 0.5, 0, step)) for step in range(10)}) > 1  # not the same half every step
    assert gen.trim_at_eos([5, 6, 2, 0, 0], eos_id=2) == (5, 6, 2) and gen.trim_at_eos([5, 6], eos_id=2) == (5, 6)


def spy_generate(model: torch.nn.Module) -> list[dict]:
    """Wrap model.generate to record, per call, the batch size, the new-token width and the model's mode."""
    calls: list[dict] = []
    original = model.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        prompt = kwargs["input_ids"]
        calls.append({"rows": prompt.shape[0], "new": out.shape[1] - prompt.shape[1], "training": model.training})
        return out

    model.generate = generate
    return calls


def test_on_policy_fraction_one_samples_every_example_within_max_new_tokens(splits, tokenizer, teacher_run, tmp_path):
    student = build_model(SPEC, tokenizer, seed=2)
    calls = spy_generate(student)
    phases = [DistillPhase(loss="forward_kl", on_policy_fraction=1.0, train=quick(3))]
    (report,) = gen.distill_generative_phases(
        student, teacher_run.model, tokenizer, splits["train"], phases, output_dir=tmp_path, seed=0,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=5), ce_weight=0.5,
    )  # fmt: skip
    assert report.examples_seen == report.generated_examples == 12
    assert [c["rows"] for c in calls] == [4, 4, 4] and all(c["new"] <= 5 for c in calls)
    assert 0 < report.longest_generation <= max(c["new"] for c in calls)  # something was sampled, within the widest batch
    assert not any(c["training"] for c in calls) and student.training  # sampled in eval mode, then back to train


def test_on_policy_fraction_zero_never_generates(splits, tokenizer, teacher_run, tmp_path):
    student = build_model(SPEC, tokenizer, seed=3)

    def refuse(*args, **kwargs):
        raise AssertionError("generate called with on_policy_fraction=0")

    student.generate = refuse
    phases = [DistillPhase(loss="jsd", train=quick(3))]
    (report,) = gen.distill_generative_phases(student, teacher_run.model, tokenizer, splits["train"], phases, output_dir=tmp_path, seed=0)
    assert report.steps == 3 and report.generated_examples == 0


def test_meaningless_schedules_are_refused_before_training(splits, tokenizer):
    student = build_model(SPEC, tokenizer, seed=4)
    with pytest.raises(ConfigError, match=r"phases\.1: loss sft with on_policy_fraction"):
        gen.check_phases([DistillPhase(loss="sft"), DistillPhase(loss="sft", on_policy_fraction=0.5)], teacher=None)
    with pytest.raises(ConfigError, match=r"phases\.0: loss forward_kl needs a teacher"):
        gen.distill_generative_phases(student, None, tokenizer, splits["train"], [DistillPhase()], output_dir=Path("unused"), seed=0)


# --------------------------------------------------------------------------- phases


def test_each_phase_has_its_folder_and_starts_from_the_previous_weights(splits, tokenizer, teacher_run, tmp_path, monkeypatch):
    starts: list[dict[str, torch.Tensor]] = []

    class Recording(gen.GenerativeTrainer):
        def __init__(self, *args, **kwargs):
            starts.append({k: v.detach().clone() for k, v in kwargs["model"].state_dict().items()})
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gen, "GenerativeTrainer", Recording)
    student = build_model(SPEC, tokenizer, seed=5)
    phases = [DistillPhase(loss="forward_kl", train=quick(3)), DistillPhase(loss="forward_kl", on_policy_fraction=0.5, train=quick(2))]
    reports = gen.distill_generative_phases(
        student, teacher_run.model, tokenizer, splits["train"], phases, output_dir=tmp_path, seed=0,
        sampling=SamplingConfig(max_new_tokens=4),
    )  # fmt: skip
    assert [r.checkpoint_dir for r in reports] == [str(tmp_path / "phase-0"), str(tmp_path / "phase-1")]
    assert (tmp_path / "phase-0" / "checkpoint-3").is_dir() and (tmp_path / "phase-1" / "checkpoint-2").is_dir()
    assert reports[1].generated_examples == 4  # half of each batch of 4, two steps
    end_of_phase_0 = load_file(tmp_path / "phase-0" / "checkpoint-3" / "model.safetensors")
    end_of_phase_1 = load_file(tmp_path / "phase-1" / "checkpoint-2" / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(starts[0][name], end_of_phase_0[name])  # phase 0 trained
    assert all(torch.equal(starts[1][k], end_of_phase_0[k]) for k in end_of_phase_0)  # phase 1 began where phase 0 ended
    assert not torch.equal(end_of_phase_1[name], end_of_phase_0[name])
    assert torch.equal(student.state_dict()[name], end_of_phase_1[name])


def test_schedules_are_reproducible_and_a_finished_schedule_is_not_rerun(splits, tokenizer, teacher_run, tmp_path):
    phases = [DistillPhase(loss="reverse_kl", train=quick(2)), DistillPhase(loss="forward_kl", on_policy_fraction=0.5, train=quick(2))]
    sampling = SamplingConfig(max_new_tokens=4)

    def run(folder: Path, student: torch.nn.Module) -> list[gen.PhaseReport]:
        return gen.distill_generative_phases(student, teacher_run.model, tokenizer, splits["train"], phases, output_dir=folder, seed=3, sampling=sampling)

    first, second = build_model(SPEC, tokenizer, seed=6), build_model(SPEC, tokenizer, seed=6)
    run(tmp_path / "a", first)
    run(tmp_path / "b", second)
    weights = first.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in second.state_dict().items())  # same seed, same samples, same student

    retried = build_model(SPEC, tokenizer, seed=8)
    retried.generate = lambda *a, **k: pytest.fail("a finished phase sampled again")
    reports = run(tmp_path / "a", retried)
    assert [(r.steps, r.resumed_from, r.extra.get("already_finished")) for r in reports] == [(2, "checkpoint-2", True)] * 2
    assert all(torch.equal(weights[k], v) for k, v in retried.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "a" / "phase-1").iterdir()) == ["checkpoint-2"]  # no extra step, no extra checkpoint


def test_frames_without_text_are_dropped(tmp_path):
    frame = load_reviews().head(6).copy()
    frame.loc[[1, 3], "Review Text"] = None
    frame.loc[4, "Review Text"] = "   "
    frame.to_parquet(tmp_path / "reviews.parquet")
    assert len(load_reviews(tmp_path)) == 3
    assert isinstance(load_reviews(tmp_path), pd.DataFrame)
