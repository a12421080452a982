"""Supervised fine-tuning on the answer token, with transformers' Trainer.

The batch unit is a *group* (one member prefix and its k candidates), trained through
the same prefix-shared forward as scoring: the prefix runs once, its KV cache is
repeated for the k candidates, and gradients flow back through the shared cache. On
ranking data, where the prefix dominates, this trains several times more examples per
second than padding k full prompts (``benchmarks/prefix_scoring.py`` measures the
scoring side of it).

The same trainer is the SFT baseline of the distill stage (cross-entropy only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recslm.config import TrainConfig
from recslm.data.tokenizer import answer_token_ids
from recslm.models.prefix import Group, answer_logits_shared
from recslm.train.runner import ListDataset, LogFn, ResumingTrainer, StepFn, TrainReport, Validation, callbacks, collate_list, fit, training_arguments

__all__ = ["AnswerTokenTrainer", "LogFn", "TrainReport", "answer_targets", "pairwise_ranking_loss", "task_weight_vector", "train_answer_model"]


def answer_targets(groups: Sequence[Group], answer_ids: dict[int, int], device: torch.device) -> torch.Tensor:
    """Token id of the true answer (" yes"/" no") for every candidate of ``groups``, in order."""
    return torch.tensor([answer_ids[y] for g in groups for y in g.labels], device=device)


class AnswerTokenTrainer(ResumingTrainer):
    """Trainer whose loss is cross-entropy of the answer token, computed prefix-shared."""

    def __init__(
        self,
        *args: Any,
        answer_ids: dict[int, int],
        pad_id: int,
        task_weights: dict[str, float] | None = None,
        ranking_loss: dict[str, float] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.answer_ids = answer_ids
        self.pad_id = pad_id
        self.task_weights = dict(task_weights or {})
        self.ranking_loss = dict(ranking_loss or {})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        groups: list[Group] = inputs["items"]
        # the loss calls the decoder and head directly (prefix sharing), so it needs the plain
        # model, not a DeepSpeed engine (whose ``config`` is DeepSpeed's dict); ZeRO's hooks
        # sit on the submodules and still gather partitioned weights
        logits = answer_logits_shared(self.accelerator.unwrap_model(model), groups, self.pad_id)
        targets = answer_targets(groups, self.answer_ids, logits.device)
        if not self.task_weights:
            loss = torch.nn.functional.cross_entropy(logits, targets)
        else:  # a weighted mean: a task's weight scales its share of the batch's loss
            weights = task_weight_vector(groups, self.task_weights, logits.device)
            loss = (torch.nn.functional.cross_entropy(logits, targets, reduction="none") * weights).sum() / weights.sum()
        if self.ranking_loss:
            loss = loss + pairwise_ranking_loss(logits, groups, self.answer_ids, self.ranking_loss)
        return (loss, None) if return_outputs else loss


def pairwise_ranking_loss(logits: torch.Tensor, groups: Sequence[Group], answer_ids: dict[int, int], weights: dict[str, float]) -> torch.Tensor:
    """A pairwise logistic (RankNet) loss inside each group, on the answer margin
    logit(yes) - logit(no), which orders candidates exactly as the scored P(yes) does.

    Why: cross-entropy grades each candidate alone, so a teacher can lower it by learning how
    likely a *member* is to say yes (offsets between decisions) while ordering one decision's
    candidates worse than the popularity its prompt prints (README, Figures: *next* centred
    inside each decision). This term grades only that order: for every (positive, negative)
    pair of one group, softplus(-(margin_pos - margin_neg)), averaged over the group's pairs,
    times the task's weight; the sum is divided by the batch's group count, so the weight is
    the term's scale per group beside the per-candidate cross-entropy. A group whose task has
    no weight, or that holds one class only, adds nothing.
    """
    margin = logits[:, answer_ids[1]] - logits[:, answer_ids[0]]
    is_positive = torch.tensor([y == 1 for g in groups for y in g.labels], device=margin.device)  # one copy to the device per batch
    total = margin.new_zeros(())
    offset = 0
    for group in groups:
        size = len(group.labels)
        weight = weights.get(group.task, 0.0)
        if weight > 0:
            scores, labels = margin[offset : offset + size], is_positive[offset : offset + size]
            positives, negatives = scores[labels], scores[~labels]
            if positives.numel() and negatives.numel():
                pairs = torch.nn.functional.softplus(negatives[None, :] - positives[:, None])
                total = total + weight * pairs.mean()
        offset += size
    return total / max(len(groups), 1)


def task_weight_vector(groups: Sequence[Group], task_weights: dict[str, float], device: torch.device) -> torch.Tensor:
    """Each candidate's loss weight: its group's task weight (1 for a task not named)."""
    return torch.tensor([task_weights.get(g.task, 1.0) for g in groups for _ in g.labels], device=device, dtype=torch.float32)


def train_answer_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Group],
    cfg: TrainConfig,
    output_dir: Path,
    *,
    seed: int,
    on_log: LogFn | None = None,
    on_step: StepFn | None = None,
    deepspeed: dict[str, Any] | None = None,
    validation: Validation | None = None,
    task_weights: dict[str, float] | None = None,
    ranking_loss: dict[str, float] | None = None,
) -> TrainReport:
    """Train ``model`` in place on the answer token of every candidate; resume if checkpoints exist.
    With ``cfg.eval_steps`` and ``validation``, the best checkpoint on val is the one kept;
    ``task_weights`` scale each task's share of the loss (the teacher's ``task_weights``);
    ``ranking_loss`` adds :func:`pairwise_ranking_loss` for the tasks it names."""
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = AnswerTokenTrainer(
        model=model,
        args=training_arguments(cfg, output_dir, n_items=len(groups), seed=seed, deepspeed=deepspeed),
        train_dataset=ListDataset(groups),
        data_collator=collate_list,
        processing_class=tokenizer,
        callbacks=callbacks(on_log, on_step, cfg),
        validation=validation if cfg.eval_steps else None,
        answer_ids=answer_token_ids(tokenizer),
        pad_id=tokenizer.pad_token_id,
        task_weights=task_weights,
        ranking_loss=ranking_loss,
    )
    return fit(trainer, output_dir, examples=sum(len(g.labels) for g in groups), items=len(groups))
