"""Answer-token SFT: it learns, it checkpoints, and a second call resumes from the checkpoint."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from recslm.config import TrainConfig
from recslm.evaluate.metrics import auc_per_task, mean_auc
from recslm.evaluate.scoring import score_records
from recslm.models.prefix import make_groups
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


class SimulatedCrash(RuntimeError):
    pass


@pytest.mark.parametrize("family", ["mixtral", "llama"])
def test_a_run_resumed_after_a_crash_ends_with_the_same_weights_bit_for_bit(family, tmp_path):
    """The retry starts from a fresh process state and resumes from the last checkpoint. A
    Mixtral's checkpoint stores its experts and router in the original per-expert layout; the
    stock resume skipped them (strict=False), so a resumed MoE went on from fresh experts."""
    records = synthetic_records(members=16)
    tokenizer = tiny_tokenizer(records)
    groups = make_groups(records, tokenizer)
    cfg = TrainConfig(max_steps=6, save_steps=2, groups_per_batch=4, learning_rate=1e-3)

    def crash_at_step_5(step: int, total: int) -> None:
        if step == 5:
            raise SimulatedCrash("worker lost")

    with pytest.raises(SimulatedCrash):
        train_answer_model(tiny_model(tokenizer, family), tokenizer, groups, cfg, tmp_path / "run", seed=0, on_step=crash_at_step_5)
    assert (tmp_path / "run" / "checkpoint-4").is_dir()
    resumed = tiny_model(tokenizer, family, seed=1)  # another initialization: every weight must come from the checkpoint
    report = train_answer_model(resumed, tokenizer, groups, cfg, tmp_path / "run", seed=0)
    assert report.resumed_from == "checkpoint-4" and report.steps == 6
    straight = tiny_model(tokenizer, family)
    train_answer_model(straight, tokenizer, groups, cfg, tmp_path / "straight", seed=0)
    ours, theirs = resumed.state_dict(), straight.state_dict()
    assert ours.keys() == theirs.keys() and any("expert" in k for k in ours) == (family == "mixtral")
    assert [k for k in ours if not torch.equal(ours[k], theirs[k])] == []


@pytest.mark.parametrize("family", ["mixtral", "llama"])
def test_validation_keeps_the_best_checkpoint_on_val_and_logs_val_curves(family, tmp_path):
    """Every eval_steps the val split is scored (val AUC per task and loss as curves); the model
    kept at the end is the best checkpoint on val AUC, not the last step (loaded strictly, so a
    Mixtral's experts come back too)."""
    from recslm.train.runner import Validation

    train, val = synthetic_records(members=24, seed=1), synthetic_records(members=12, seed=3)
    tokenizer = tiny_tokenizer(train + val)
    model = tiny_model(tokenizer, family)
    validation = Validation(val, tokenizer)
    logs: list[tuple[int, dict]] = []
    cfg = TrainConfig(max_steps=12, learning_rate=2e-2, groups_per_batch=4, save_steps=3, eval_steps=3, logging_steps=3, save_total_limit=1)
    report = train_answer_model(model, tokenizer, make_groups(train, tokenizer), cfg, tmp_path / "ckpt", seed=0,
                                on_log=lambda s, v: logs.append((s, v)), validation=validation)  # fmt: skip
    curve = {step: v for step, v in logs if "val_auc_mean" in v}
    assert sorted(curve) == [3, 6, 9, 12]
    assert all({"val_loss", "val_auc_like"} <= set(v) for v in curve.values())
    best = max(curve, key=lambda s: (curve[s]["val_auc_mean"], -s))
    assert report.best_step == best and report.best_metric == pytest.approx(curve[best]["val_auc_mean"])
    assert validation.score(model)["auc_mean"] == pytest.approx(curve[best]["val_auc_mean"], abs=1e-9)
    # the report keeps the same curve (a shipped checkpoint's card shows it)
    assert [int(h["step"]) for h in report.val_history] == [3, 6, 9, 12]
    assert [h["val_auc_mean"] for h in report.val_history] == pytest.approx([curve[s]["val_auc_mean"] for s in (3, 6, 9, 12)])


def test_early_stopping_ends_training_when_val_stops_improving(tmp_path):
    from recslm.train.runner import Validation

    train, val = synthetic_records(members=24, seed=1), synthetic_records(members=12, seed=3)
    tokenizer = tiny_tokenizer(train + val)
    validation = Validation(val, tokenizer, max_groups=6, seed=0)
    assert len(validation.groups) == 6 and len(validation.records) == sum(len(g.labels) for g in validation.groups)
    cfg = TrainConfig(max_steps=200, learning_rate=2e-2, groups_per_batch=4, save_steps=2, eval_steps=2, early_stopping_patience=2, best_metric="val_loss")
    report = train_answer_model(tiny_model(tokenizer, "llama"), tokenizer, make_groups(train, tokenizer), cfg, tmp_path / "ckpt", seed=0, validation=validation)
    assert report.stopped_early and report.steps < 200 and report.best_step is not None
    assert report.steps == report.best_step + 2 * cfg.eval_steps  # two evaluations without a new best, then stop


def test_validation_settings_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="early_stopping_patience needs eval_steps"):
        TrainConfig(early_stopping_patience=2)
    with pytest.raises(ValidationError, match=r"save_steps \(5\) must be a multiple of eval_steps \(2\)"):
        TrainConfig(save_steps=5, eval_steps=2)
