"""The teacher stage: train from a spec, or load a trained teacher that shares the data's tokenizer."""

from __future__ import annotations

import pytest

from recslm.config import ArchSpec, TeacherConfig, TrainConfig
from recslm.data.build import tokenizer_path
from recslm.data.tokenizer import load_tokenizer
from recslm.errors import CheckpointError, TokenizerError
from recslm.models.factory import build_model, save_model
from recslm.train.teacher import make_teacher
from tests.helpers import data_artifact, synthetic_records, tiny_tokenizer

TINY = ArchSpec(family="mixtral", hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=32, num_experts=2, experts_per_token=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return data_artifact(tmp_path_factory.mktemp("data"))


def test_trains_from_a_spec_and_saves_a_plain_directory(data_dir, tmp_path):
    cfg = TeacherConfig(arch=TINY, train=TrainConfig(max_steps=3, groups_per_batch=4, save_steps=2))
    metrics = make_teacher(cfg, data_dir, tmp_path / "out", tmp_path / "ckpt", seed=0)
    assert metrics["steps"] == 3 and metrics["model_type"] == "mixtral" and metrics["num_experts"] == 2
    assert metrics["val_loss"] > 0 and metrics["bytes"] > 0
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()


def test_a_foundation_phase_runs_first_and_validation_picks_the_checkpoint(data_dir, tmp_path):
    from recslm.config import FoundationConfig

    cfg = TeacherConfig(
        arch=TINY,
        foundation=FoundationConfig(train=TrainConfig(max_steps=4, groups_per_batch=2, save_steps=2), block_size=32),
        train=TrainConfig(max_steps=4, groups_per_batch=4, save_steps=2, eval_steps=2),
    )
    logs: list[tuple[int, dict]] = []
    metrics = make_teacher(cfg, data_dir, tmp_path / "out", tmp_path / "ckpt", seed=0, on_log=lambda s, v: logs.append((s, v)))
    assert metrics["foundation_steps"] == 4 and metrics["foundation_blocks"] > 0 and metrics["steps"] == 4
    assert metrics["best_step"] in (2, 4) and 0 <= metrics["best_val"] <= 1
    assert [int(h["step"]) for h in metrics["val_history"]] == [2, 4]
    assert (tmp_path / "ckpt" / "foundation" / "report.json").is_file() and list((tmp_path / "ckpt" / "answer").glob("checkpoint-*"))
    assert any("foundation_loss" in v for _, v in logs) and any("val_auc_mean" in v for _, v in logs)


def test_loads_a_trained_teacher_with_the_same_tokenizer(data_dir, tmp_path):
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    save_model(build_model(TINY, tokenizer, seed=3), tokenizer, tmp_path / "trained")
    metrics = make_teacher(TeacherConfig(path=tmp_path / "trained"), data_dir, tmp_path / "out", tmp_path / "ckpt", seed=0)
    assert metrics["loaded_from"] == str(tmp_path / "trained") and "steps" not in metrics


def test_a_teacher_with_another_tokenizer_is_refused_before_work(data_dir, tmp_path):
    other = tiny_tokenizer(synthetic_records(members=3, seed=9))
    other.add_tokens(["<extra>"])
    save_model(build_model(TINY, other, seed=0), other, tmp_path / "foreign")
    with pytest.raises(TokenizerError, match="differs from the data stage's tokenizer"):
        make_teacher(TeacherConfig(path=tmp_path / "foreign"), data_dir, tmp_path / "out", tmp_path / "ckpt", seed=0)


def test_a_missing_teacher_directory_is_a_clear_error(data_dir, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        make_teacher(TeacherConfig(path=tmp_path / "absent"), data_dir, tmp_path / "out", tmp_path / "ckpt", seed=0)


def test_a_loaded_checkpoint_is_fine_tuned_with_validation_when_asked(data_dir, tmp_path):
    """teacher.path + fine_tune: the paper's teacher is an existing foundation model adapted to
    the task; the loaded weights are the starting point, trained on the answer token with
    validation picking the checkpoint, and the result differs from what was loaded."""
    import torch

    from recslm.models.factory import load_model

    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    save_model(build_model(TINY, tokenizer, seed=3), tokenizer, tmp_path / "foundation")
    cfg = TeacherConfig(path=tmp_path / "foundation", fine_tune=True, train=TrainConfig(max_steps=4, groups_per_batch=4, save_steps=2, eval_steps=2))
    metrics = make_teacher(cfg, data_dir, tmp_path / "out", tmp_path / "ckpt", seed=0)
    assert metrics["loaded_from"] == str(tmp_path / "foundation") and metrics["steps"] == 4 and metrics["best_step"] in (2, 4)
    before, after = load_model(tmp_path / "foundation"), load_model(tmp_path / "out" / "model")
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    with pytest.raises(ValueError, match="fine_tune is for a teacher loaded from path"):
        TeacherConfig(arch=TINY, fine_tune=True)
    with pytest.raises(ValueError, match="set fine_tune: true as well"):
        TeacherConfig(path=tmp_path / "foundation", foundation={"block_size": 32})
