"""What every recslm training run shares: TrainingArguments from a TrainConfig, callbacks, resume.

SFT (``recslm.train.sft``) and distillation (``recslm.train.distill``) differ only in their
loss; both hand a ``Trainer`` subclass to :func:`fit`, which resumes from the last
checkpoint in ``output_dir`` (model, optimizer, scheduler, RNG and data position), so a
stage killed mid-run and started again continues where it stopped.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import EarlyStoppingCallback, PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments

from recslm.config import TrainConfig
from recslm.data.records import RankingRecord
from recslm.models.placement import stage_device
from recslm.runtime import current_runtime

LogFn = Callable[[int, dict[str, float]], None]
StepFn = Callable[[int, int], None]


class ListDataset(Dataset):
    """A list of ready-made training items (groups, or groups with teacher targets)."""

    def __init__(self, items: Sequence[Any]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def collate_list(batch: list[Any]) -> dict[str, Any]:
    """Items have ragged shapes; the loss pads them itself, so the batch is the list."""
    return {"items": batch}


class Validation:
    """The val split as a model in training sees it: scored with the same prefix-shared forward
    as the evaluate stage, giving val AUC per task, its mean and the answer-token loss.

    ``max_groups`` keeps a seeded subset of whole groups (the same one at every evaluation),
    so a long val split does not dominate training time.
    """

    def __init__(self, records: Sequence[RankingRecord], tokenizer: PreTrainedTokenizerBase, *, max_groups: int | None = None, seed: int = 0):
        from recslm.models.prefix import make_groups

        groups = make_groups(records, tokenizer)
        if max_groups is not None and len(groups) > max_groups:
            keep = np.sort(np.random.default_rng([seed, 7]).choice(len(groups), size=max_groups, replace=False))
            records = [records[i] for k in keep for i in groups[k].record_index]
            groups = make_groups(records, tokenizer)
        self.records, self.groups, self.tokenizer = list(records), groups, tokenizer

    @classmethod
    def for_training(cls, data_dir: Path, tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig | None, seed: int) -> Validation | None:
        """The data artifact's val split as ``cfg`` asks for it (None when it validates nothing)."""
        if cfg is None or not cfg.eval_steps:
            return None
        from recslm.data.build import load_split

        return cls(load_split(data_dir, "val"), tokenizer, max_groups=cfg.eval_groups, seed=seed)

    def score(self, model: PreTrainedModel) -> dict[str, float]:
        from recslm.evaluate.metrics import auc_per_task, mean_auc
        from recslm.evaluate.scoring import score_records

        result = score_records(model, self.tokenizer, self.records, groups=self.groups, groups_per_batch=16)
        auc = auc_per_task(result.tasks, result.labels, result.scores)
        return {"loss": result.loss, "auc_mean": mean_auc(auc), **{f"auc_{task}": value for task, value in auc.items()}}


class ResumingTrainer(Trainer):
    """A Trainer whose resume restores every weight, whatever the architecture, and which
    validates on the val split (:class:`Validation`) when given one.

    Checkpoints are written by ``save_pretrained``, which converts some architectures to
    their original checkpoint layout (a Mixtral's fused experts become per-expert
    ``w1/w2/w3`` and its router ``gate``). The stock resume loads that file with
    ``load_state_dict(strict=False)``, which silently skipped those weights: a retried MoE
    teacher went on training from a fresh initialization of its experts. Loading the
    checkpoint back through ``from_pretrained`` undoes the conversion, and the strict load
    makes any remaining mismatch an error instead of a quiet divergence.
    (DeepSpeed runs resume through DeepSpeed's own checkpoint, not this method.) Loading the
    best checkpoint at the end goes the same way.

    With ``validation``, ``evaluate`` scores it (the Trainer calls it every ``eval_steps``):
    the metrics go to the logs as ``val_*`` curves and back to the Trainer as ``eval_*``,
    which picks the best checkpoint and feeds early stopping.
    """

    def __init__(self, *args: Any, validation: Validation | None = None, **kwargs: Any):
        if validation is not None:
            kwargs.setdefault("eval_dataset", ListDataset(validation.groups))  # the Trainer wants one; evaluate below reads validation
        super().__init__(*args, **kwargs)
        self.validation = validation

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> dict[str, float]:  # noqa: D102
        if self.validation is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        values = self.validation.score(self.accelerator.unwrap_model(self.model))
        self.log({f"val_{name}": value for name, value in values.items()})
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in values.items()}
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _load_best_model(self) -> None:
        if self.is_deepspeed_enabled or self.state.best_model_checkpoint is None:
            return super()._load_best_model()
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        folder = Path(resume_from_checkpoint)
        if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(target).from_pretrained(folder, dtype=next(target.parameters()).dtype)
        target.load_state_dict(saved.state_dict(), strict=True)


class ForwardLogs(TrainerCallback):
    """Hands each Trainer log line (loss, learning rate, grad norm) to a callback, e.g. MLflow."""

    def __init__(self, sink: LogFn):
        self.sink = sink

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102
        numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if numeric:
            self.sink(state.global_step, numeric)


class StepProgress(TrainerCallback):
    """Reports optimizer steps to a progress callback (the CLI draws a rich bar)."""

    def __init__(self, sink: StepFn):
        self.sink = sink

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        self.sink(state.global_step, state.max_steps)


def callbacks(on_log: LogFn | None, on_step: StepFn | None, cfg: TrainConfig | None = None) -> list[TrainerCallback]:
    """Log forwarding, progress, and early stopping on val when ``cfg`` asks for it."""
    out: list[TrainerCallback] = []
    if cfg is not None and cfg.early_stopping_patience:
        out.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if on_log is not None:
        out.append(ForwardLogs(on_log))
    if on_step is not None:
        out.append(StepProgress(on_step))
    return out


def phase_log(on_log: LogFn | None, phase: int) -> LogFn | None:
    """Curves of a multi-phase run: steps restart at 0 in every phase, so phase N > 0 prefixes
    its names (``phase1_loss``) to stay a curve of its own; phase 0 keeps the plain names."""
    if on_log is None or phase == 0:
        return on_log
    return lambda step, values: on_log(step, {f"phase{phase}_{k}": v for k, v in values.items()})


def planned_steps(n_items: int, cfg: TrainConfig, world_size: int = 1) -> int:
    """Optimizer steps the run will take (needed to turn the warmup ratio into steps)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_step = cfg.groups_per_batch * max(world_size, 1)
    return max(1, math.ceil(cfg.epochs * math.ceil(n_items / per_step)))


def training_arguments(
    cfg: TrainConfig,
    output_dir: Path,
    *,
    n_items: int,
    seed: int,
    deepspeed: dict[str, Any] | None = None,
) -> TrainingArguments:
    """TrainingArguments for one run; ``deepspeed`` is a DeepSpeed config dict (ZeRO), or None.

    Device and precision come from the computing stage's runtime (``runtime.device``,
    ``runtime.dtype``, ``runtime.gradient_checkpointing``): bf16 and fp16 are the Trainer's
    mixed precision (fp32 master weights, autocast forward; on a CPU too for bf16)."""
    runtime = current_runtime()
    device = stage_device(runtime.device)
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    steps = planned_steps(n_items, cfg, world_size)
    validating = cfg.eval_steps > 0
    return TrainingArguments(
        eval_strategy="steps" if validating else "no",
        eval_steps=cfg.eval_steps if validating else None,
        load_best_model_at_end=validating,
        metric_for_best_model=cfg.best_metric.removeprefix("val_") if validating else None,
        greater_is_better=cfg.best_metric == "val_auc_mean" if validating else None,
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.groups_per_batch,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=int(cfg.warmup_ratio * steps),
        lr_scheduler_type="cosine",
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=device.type == "cpu",
        bf16=runtime.dtype == "bf16",
        fp16=runtime.dtype == "fp16",
        gradient_checkpointing=runtime.gradient_checkpointing,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        deepspeed=deepspeed,
    )


@dataclass
class TrainReport:
    steps: int
    train_loss: float
    wall_s: float
    resumed_from: str | None
    examples: int
    groups: int
    examples_per_s: float
    best_step: int | None = None  # the checkpoint kept, chosen on val (None: no validation, the last step)
    best_metric: float | None = None
    stopped_early: bool = False
    # the val scores logged during training ({"step", "val_auc_mean", "val_loss", ...}): the curve a
    # shipped checkpoint's card shows, and what a resumed run continues (the Trainer's state keeps it)
    val_history: list[dict[str, float]] = field(default_factory=list)

    def stage_metrics(self) -> dict[str, Any]:
        """The run as a training stage records it (the teacher stages of both tasks)."""
        return {
            "best_step": self.best_step, "best_val": self.best_metric, "stopped_early": self.stopped_early, "train_loss": self.train_loss,
            "steps": self.steps, "train_examples": self.examples, "train_groups": self.groups, "train_wall_s": round(self.wall_s, 2),
            "train_examples_per_s": round(self.examples_per_s, 2), "resumed_from": self.resumed_from, "val_history": self.val_history,
        }  # fmt: skip


def _is_complete(checkpoint: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` after weights, optimizer, scheduler and RNG
    state, so a checkpoint whose state file parses was written to the end."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """Newest checkpoint written to the end; half-written ones (a kill during the save) are deleted.

    ``transformers.trainer_utils.get_last_checkpoint`` only looks at folder names, so a
    process killed while saving would make the retry fail on its own leftovers.
    """
    found = sorted(
        (int(m.group(1)), path)
        for path in output_dir.glob("checkpoint-*")
        if path.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", path.name))
    )
    for _, path in reversed(found):
        if _is_complete(path):
            return path
        shutil.rmtree(path, ignore_errors=True)
    return None


def fit(trainer: Trainer, output_dir: Path, *, examples: int, items: int) -> TrainReport:
    """Train, resuming from the newest checkpoint under ``output_dir`` if there is one.

    ``examples`` (candidates) and ``items`` (groups) turn the Trainer's items/s into
    examples/s, the number users compare.
    """
    resume = last_complete_checkpoint(output_dir) if trainer.args.should_save else None
    if trainer.args.world_size > 1:  # every rank must resume from the same step: rank 0 decides
        resume = _broadcast(str(resume) if resume else None)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    state = trainer.state
    validated = trainer.args.eval_strategy != "no"
    return TrainReport(
        best_step=state.best_global_step if validated else None,
        best_metric=float(state.best_metric) if validated and state.best_metric is not None else None,
        stopped_early=validated and state.global_step < state.max_steps,
        steps=result.global_step,
        train_loss=float(result.training_loss),
        wall_s=time.perf_counter() - start,
        resumed_from=Path(resume).name if resume else None,
        examples=examples,
        groups=items,
        examples_per_s=float(result.metrics.get("train_samples_per_second", 0.0)) * examples / max(items, 1),
        val_history=[{k: v for k, v in entry.items() if k == "step" or k.startswith("val_")} for entry in state.log_history if "val_auc_mean" in entry or "val_loss" in entry],
    )


def _broadcast(value: str | None) -> str | None:
    """Rank 0's value on every rank (checkpoint choice must agree across DeepSpeed ranks)."""
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
