"""Scoring records: P(yes) / (P(yes) + P(no)) at the answer position, prefix-shared
(:mod:`recslm.models.prefix`) or naive, with the answer loss and the work done."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recslm.data.records import RankingRecord
from recslm.errors import DataError
from recslm.data.tokenizer import answer_token_ids
from recslm.models.prefix import Group, answer_rows_naive, answer_rows_shared, batches, make_groups, token_logits_fp32


@dataclass
class ScoreResult:
    """Per-record P(yes) scores (in record order) and the answer-token cross-entropy."""

    scores: np.ndarray
    labels: np.ndarray
    tasks: list[str]
    loss: float
    groups: int
    tokens_computed: int
    seconds: float


def check_context(model: PreTrainedModel, groups: Sequence[Group]) -> None:
    """Every prompt (prefix + candidate) fits the model's context, as the server demands: past
    ``max_position_embeddings`` a model extrapolates positions it never saw (or fails
    outright), and an AUC computed that way is not one anyone should trust."""
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if not context:
        return
    for group in groups:
        longest = max(len(c) for c in group.candidate_ids)
        if len(group.prefix_ids) + longest > context:
            first = group.record_index[0] if group.record_index else "?"
            raise DataError(
                f"record {first} (member {group.member_id}, task {group.task}): the prompt is {len(group.prefix_ids) + longest:,} tokens, "
                f"beyond the model's context of {context:,} (max_position_embeddings); shorten the prefix (data.history_len) or use a longer-context model"
            )


def score_records(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[RankingRecord],
    *,
    prefix_sharing: bool = True,
    groups: list[Group] | None = None,
    groups_per_batch: int = 8,
    on_group: Callable[[int], None] | None = None,
) -> ScoreResult:
    """Score every record: P(yes) / (P(yes) + P(no)) at the answer position.

    ``loss`` is the mean cross-entropy of the true answer token over the whole vocabulary
    (the validation loss of answer-token training).
    """
    ids = answer_token_ids(tokenizer)
    yes_id, no_id = ids[1], ids[0]
    groups = groups if groups is not None else make_groups(records, tokenizer)
    check_context(model, groups)
    forward = answer_rows_shared if prefix_sharing else answer_rows_naive
    head = model.get_output_embeddings()
    scores = np.zeros(len(records), dtype=np.float64)
    labels = np.zeros(len(records), dtype=np.int64)
    total_loss, count, tokens = 0.0, 0, 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches(groups, groups_per_batch):
            rows = forward(model, batch, tokenizer.pad_token_id)
            logits = head(rows).float()  # the whole vocabulary, for the loss
            p_yes = torch.softmax(token_logits_fp32(model, rows, [yes_id, no_id]), dim=-1)[:, 0]  # the score: see token_logits_fp32
            batch_labels = [label for g in batch for label in g.labels]
            target = torch.tensor([ids[label] for label in batch_labels], device=logits.device)
            total_loss += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            count += len(batch_labels)
            tokens += sum(g.tokens_shared if prefix_sharing else g.tokens_naive for g in batch)
            index = [i for g in batch for i in g.record_index]
            scores[index] = p_yes.double().cpu().numpy()
            labels[index] = batch_labels
            if on_group is not None:
                on_group(len(batch))
    model.train(was_training)
    return ScoreResult(
        scores=scores,
        labels=labels,
        tasks=[r.task for r in records],
        loss=total_loss / max(count, 1),
        groups=len(groups),
        tokens_computed=tokens,
        seconds=time.perf_counter() - start,
    )
