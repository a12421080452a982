"""Answer-token SFT: it learns, it checkpoints, and a second call resumes from the checkpoint."""

from __future__ import annotations

import numpy as np

from recslm.config import TrainConfig
from recslm.evaluate.metrics import auc_per_task, mean_auc
from recslm.evaluate.scoring import make_groups, score_records
from recslm.train.sft import train_answer_model
from tests.helpers import synthetic_records, tiny_model, tiny_tokenizer


def test_training_learns_a_learnable_rule(tmp_path):
    train = synthetic_records(members=40, seed=1)
    test = synthetic_records(members=20, seed=2)
    tokenizer = tiny_tokenizer(train + test)
    model = tiny_model(tokenizer, "mixtral")
    before = score_records(model, tokenizer, test)
    logs: list[tuple[int, dict]] = []
    cfg = TrainConfig(epochs=12, learning_rate=5e-3, groups_per_batch=4, save_steps=1000, logging_steps=5)
    report = train_answer_model(model, tokenizer, make_groups(train, tokenizer), cfg, tmp_path / "ckpt", seed=0, on_log=lambda s, v: logs.append((s, v)))
    after = score_records(model, tokenizer, test)
    assert report.steps == 12 * 20  # 80 groups / 4 per batch, 12 epochs
    assert after.loss < before.loss * 0.5
    assert mean_auc(auc_per_task(after.tasks, after.labels, after.scores)) > 0.8
    losses = [v["loss"] for _, v in logs if "loss" in v]
    assert len(losses) >= 10 and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_resume_from_last_checkpoint(tmp_path):
    records = synthetic_records(members=16)
    tokenizer = tiny_tokenizer(records)
    groups = make_groups(records, tokenizer)
    first = tiny_model(tokenizer, "llama")
    cfg = TrainConfig(max_steps=4, save_steps=2, groups_per_batch=4, learning_rate=1e-3)
    report = train_answer_model(first, tokenizer, groups, cfg, tmp_path, seed=0)
    assert report.resumed_from is None and (tmp_path / "checkpoint-4").is_dir()
    # a "retry" with a longer budget picks up at step 4 instead of starting over
    resumed = tiny_model(tokenizer, "llama", seed=1)
    report2 = train_answer_model(resumed, tokenizer, groups, cfg.model_copy(update={"max_steps": 6}), tmp_path, seed=0)
    assert report2.resumed_from == "checkpoint-4" and report2.steps == 6
    # and it equals training 6 steps without interruption
    straight = tiny_model(tokenizer, "llama")
    train_answer_model(straight, tokenizer, groups, cfg.model_copy(update={"max_steps": 6}), tmp_path / "straight", seed=0)
    a = score_records(resumed, tokenizer, records).scores
    b = score_records(straight, tokenizer, records).scores
    assert np.abs(a - b).max() < 1e-4
