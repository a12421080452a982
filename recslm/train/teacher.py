"""The teacher stage: train a model from a spec on the answer token, or load a trained one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from recslm.config import TeacherConfig
from recslm.data.build import load_split, tokenizer_path
from recslm.data.tokenizer import load_tokenizer, same_vocabulary
from recslm.errors import TokenizerError
from recslm.evaluate.scoring import score_records
from recslm.models.factory import build_model, describe, directory_bytes, load_model, save_model
from recslm.models.prefix import make_groups
from recslm.train.runner import LogFn, Validation
from recslm.train.sft import train_answer_model

VAL_LOSS_GROUPS = 300  # the validation loss is a health check, not the quality metric (AUC is): keep it cheap


def make_teacher(
    cfg: TeacherConfig,
    data_dir: Path,
    out_dir: Path,
    checkpoint_dir: Path,
    *,
    seed: int,
    on_log: LogFn | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the teacher to ``out_dir/model`` and return its metrics (params, losses, wall time)."""
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    metrics: dict[str, Any] = {}
    if cfg.path is not None:
        own = load_tokenizer(cfg.path, cfg.trust_remote_code)
        if not same_vocabulary(own, tokenizer):
            raise TokenizerError(
                f"teacher.path {cfg.path}: its tokenizer differs from the data stage's tokenizer; "
                "set data.tokenizer.path to the teacher's directory"
            )
        model = load_model(cfg.path, cfg.trust_remote_code)
        metrics["loaded_from"] = str(cfg.path)
    else:
        model = build_model(cfg.arch, tokenizer, seed)
    if cfg.trains():
        model, trained = _train(model, tokenizer, cfg, data_dir, checkpoint_dir, seed=seed, on_log=on_log, on_step=on_step)
        metrics.update(trained)
    val_records = load_split(data_dir, "val")
    val_groups = make_groups(val_records, tokenizer)[:VAL_LOSS_GROUPS]
    val = score_records(model, tokenizer, val_records, groups=val_groups)
    save_model(model, tokenizer, out_dir / "model")
    metrics.update(val_loss=val.loss, val_loss_groups=len(val_groups), bytes=directory_bytes(out_dir / "model"), **describe(model))
    return metrics


def _train(
    model: Any, tokenizer: Any, cfg: TeacherConfig, data_dir: Path, checkpoint_dir: Path, *, seed: int,
    on_log: LogFn | None, on_step: Callable[[int, int], None] | None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """The optional causal-LM pre-training, then answer-token training with validation: for a
    teacher built from a spec, and for a loaded checkpoint being fine-tuned to the task.

    Returns the trained model: ``model`` itself, or under DeepSpeed (``teacher.deepspeed``,
    required on several ranks) a plain model reloaded from what rank 0 saved, since ZeRO-3
    leaves only this rank's shards in ``model``.
    """
    from recslm.train.deepspeed import deepspeed_config, load_trained_model, save_trained_model

    deepspeed = deepspeed_config(cfg.deepspeed, cfg.train)
    metrics: dict[str, Any] = {}
    train_records = load_split(data_dir, "train")
    if cfg.foundation is not None:
        from recslm.train.foundation import final_dir, pretrain

        foundation_log = None if on_log is None else (lambda step, values: on_log(step, {f"foundation_{k}": v for k, v in values.items()}))
        folder = checkpoint_dir / "foundation"
        metrics.update(pretrain(model, tokenizer, train_records, cfg.foundation, folder, seed=seed, on_log=foundation_log, on_step=on_step, deepspeed=deepspeed))
        if deepspeed is not None:
            model = load_trained_model(final_dir(folder), cfg.trust_remote_code)
    groups = make_groups(train_records, tokenizer)
    validation = Validation.for_training(data_dir, tokenizer, cfg.train, seed)
    answer_dir = checkpoint_dir / "answer" if cfg.foundation else checkpoint_dir
    report = train_answer_model(model, tokenizer, groups, cfg.train, answer_dir, seed=seed, on_log=on_log, on_step=on_step, validation=validation,
                                deepspeed=deepspeed, task_weights=cfg.task_weights, ranking_loss=cfg.ranking_loss)  # fmt: skip
    if deepspeed is not None:
        save_trained_model(model, tokenizer, answer_dir / "trained")  # every rank: a collective under ZeRO-3; rank 0 writes
        model = load_trained_model(answer_dir / "trained", cfg.trust_remote_code)
    metrics.update(report.stage_metrics())
    return model, metrics
