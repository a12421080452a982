"""Supervised fine-tuning on the answer token, with transformers' Trainer.

The batch unit is a *group* (one member prefix and its k candidates), trained through
the same prefix-shared forward as scoring: the prefix runs once, its KV cache is
repeated for the k candidates, and gradients flow back through the shared cache. On
ranking data, where the prefix dominates, this trains several times more examples per
second than padding k full prompts (``benchmarks/prefix_scoring.py`` measures the
scoring side of it).

Checkpoints go to ``output_dir`` every ``save_steps``; a retried stage resumes from the
last one (Trainer restores model, optimizer, scheduler, RNG and data position).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from recslm.config import TrainConfig
from recslm.data.tokenizer import answer_token_ids
from recslm.evaluate.scoring import Group, answer_logits_shared

LogFn = Callable[[int, dict[str, float]], None]


class GroupDataset(Dataset):
    """A list of groups as a torch Dataset (one item = one member prefix with its candidates)."""

    def __init__(self, groups: Sequence[Group]):
        self.groups = list(groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> Group:
        return self.groups[index]


def collate_groups(batch: list[Group]) -> dict[str, Any]:
    """Groups have ragged shapes; the loss pads them itself, so the batch is the list."""
    return {"groups": batch}


class AnswerTokenTrainer(Trainer):
    """Trainer whose loss is cross-entropy of the answer token, computed prefix-shared."""

    def __init__(self, *args: Any, answer_ids: dict[int, int], pad_id: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.answer_ids = answer_ids
        self.pad_id = pad_id

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        groups: list[Group] = inputs["groups"]
        logits = answer_logits_shared(model, groups, self.pad_id)
        target = torch.tensor([self.answer_ids[y] for g in groups for y in g.labels], device=logits.device)
        loss = torch.nn.functional.cross_entropy(logits, target)
        return (loss, None) if return_outputs else loss


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

    def __init__(self, sink: Callable[[int, int], None]):
        self.sink = sink

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        self.sink(state.global_step, state.max_steps)


@dataclass
class TrainReport:
    steps: int
    train_loss: float
    wall_s: float
    resumed_from: str | None
    examples: int
    groups: int
    examples_per_s: float


def planned_steps(n_groups: int, cfg: TrainConfig) -> int:
    """Optimizer steps the run will take (needed to turn the warmup ratio into steps)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * math.ceil(n_groups / cfg.groups_per_batch)))


def train_answer_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Group],
    cfg: TrainConfig,
    output_dir: Path,
    *,
    seed: int,
    on_log: LogFn | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainReport:
    """Train ``model`` in place on the answer token of every candidate; resume if checkpoints exist."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    output_dir.mkdir(parents=True, exist_ok=True)
    steps = planned_steps(len(groups), cfg)
    args = TrainingArguments(
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
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )
    callbacks: list[TrainerCallback] = []
    if on_log is not None:
        callbacks.append(ForwardLogs(on_log))
    if on_step is not None:
        callbacks.append(StepProgress(on_step))
    trainer = AnswerTokenTrainer(
        model=model,
        args=args,
        train_dataset=GroupDataset(groups),
        data_collator=collate_groups,
        processing_class=tokenizer,
        callbacks=callbacks,
        answer_ids=answer_token_ids(tokenizer),
        pad_id=tokenizer.pad_token_id,
    )
    resume = get_last_checkpoint(str(output_dir)) if any(output_dir.glob("checkpoint-*")) else None
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    examples = sum(len(g.labels) for g in groups)
    return TrainReport(
        steps=result.global_step,
        train_loss=float(result.training_loss),
        wall_s=time.perf_counter() - start,
        resumed_from=Path(resume).name if resume else None,
        examples=examples,
        groups=len(groups),
        examples_per_s=float(result.metrics.get("train_samples_per_second", 0.0)) * examples / max(len(groups), 1),
    )
