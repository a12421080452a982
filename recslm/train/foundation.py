"""The foundation phase: causal-LM pre-training of the teacher on the training period's text.

The paper's teacher is a foundation model that learned from member activity before it was
fine-tuned to answer. recslm gives its built teacher the same shape: before the
answer-token fine-tuning, it learns to predict every token of the training groups written
out in full (the member's profile and rated history, then each candidate with its stats
and its answer). So the model has read member histories, item descriptions and the
prompt format before it fine-tunes, and the prompt-KD term of distillation later distils
a language model that was trained on prompts, not an untrained one.

Only the train split is read: its records end before the validation period, so nothing
of val or test leaks into the teacher. Texts are tokenized, joined with the EOS token and
packed into ``block_size`` blocks (no padding). A mixture-of-experts teacher adds the
router's load-balancing loss (``router_aux_loss_coef``), which its Hugging Face forward
computes when asked for router logits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recslm.config import FoundationConfig
from recslm.data.records import RankingRecord, answer_text
from recslm.jsonfile import write_json
from recslm.distributed import is_main_process
from recslm.train.deepspeed import save_trained_model
from recslm.train.runner import ListDataset, LogFn, ResumingTrainer, StepFn, TrainReport, callbacks, fit, training_arguments


def group_texts(records: Sequence[RankingRecord]) -> list[str]:
    """One text per group: its prefix, then every candidate followed by its answer."""
    return [
        group[0].prefix + "\n".join(r.candidate + answer_text(r.label) for r in group)
        for _, rows in groupby(records, key=lambda r: (r.member_id, r.task, r.prefix))
        for group in [list(rows)]
    ]


def pack_blocks(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block_size: int) -> list[torch.Tensor]:
    """Token blocks of exactly ``block_size`` from the texts joined by EOS (the tail shorter than a block is dropped)."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream += ids + [eos]
    tokens = torch.tensor(stream, dtype=torch.long)
    count = len(tokens) // block_size
    return list(tokens[: count * block_size].view(count, block_size))


def collate_blocks(batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    ids = torch.stack(batch)
    return {"input_ids": ids, "labels": ids.clone()}


def pretrain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[RankingRecord],
    cfg: FoundationConfig,
    output_dir: Path,
    *,
    seed: int,
    on_log: LogFn | None = None,
    on_step: StepFn | None = None,
    deepspeed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pre-train ``model`` in place on the groups of ``records``; return the phase's metrics.

    A killed run resumes from its last checkpoint; a finished phase (``final/`` and
    ``report.json`` written) is not run again when the stage is retried later, in the
    answer-token phase: its weights are loaded back strictly. Under DeepSpeed (every rank calls
    this) the weights are written by rank 0 from the gathered model, and the caller reloads
    them from ``output_dir/final`` (:func:`final_dir`): ZeRO-3 leaves only shards in ``model``.
    """
    done = output_dir / "report.json"
    if done.is_file():
        saved = type(model).from_pretrained(output_dir / "final", dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict(), strict=True)
        return {**json.loads(done.read_text()), "foundation_reused": True}
    blocks = pack_blocks(group_texts(records), tokenizer, cfg.block_size)
    if not blocks:
        raise ValueError(f"teacher.foundation.block_size={cfg.block_size}: the training texts hold fewer tokens than one block")
    moe = hasattr(model.config, "router_aux_loss_coef")
    if moe:
        model.config.output_router_logits = True
        model.config.router_aux_loss_coef = cfg.router_aux_loss_coef
        model.router_aux_loss_coef = cfg.router_aux_loss_coef
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = ResumingTrainer(  # the model's own causal-LM loss (plus the router's auxiliary loss for an MoE)
        model=model,
        args=training_arguments(cfg.train.model_copy(update={"eval_steps": 0, "early_stopping_patience": 0}), output_dir, n_items=len(blocks), seed=seed, deepspeed=deepspeed),
        train_dataset=ListDataset(blocks),
        data_collator=collate_blocks,
        processing_class=tokenizer,
        callbacks=callbacks(on_log, on_step),
    )
    try:
        report: TrainReport = fit(trainer, output_dir, examples=len(blocks) * cfg.block_size, items=len(blocks))
    finally:
        if moe:
            model.config.output_router_logits = False  # scoring and fine-tuning need no router logits
    save_trained_model(model, tokenizer, final_dir(output_dir))  # every rank (a collective under ZeRO-3); rank 0 writes
    metrics = {
        "foundation_steps": report.steps,
        "foundation_loss": report.train_loss,
        "foundation_blocks": len(blocks),
        "foundation_tokens": len(blocks) * cfg.block_size,
        "foundation_wall_s": round(report.wall_s, 2),
        "foundation_resumed_from": report.resumed_from,
    }
    if is_main_process():
        write_json(done, metrics, indent=None)
    return metrics


def final_dir(output_dir: Path) -> Path:
    """Where :func:`pretrain` leaves the pre-trained weights."""
    return output_dir / "final"
