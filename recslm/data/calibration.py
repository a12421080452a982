"""Calibration prompts: which inputs pruning and quantization are calibrated on.

In-domain prompts are training records tokenized exactly as recslm scores them (prefix +
candidate, through :func:`recslm.models.prefix.make_groups`), picked reproducibly and spread
over prompt groups; generic text is the bundled clothing reviews. Pruning
(:mod:`recslm.prune`) and quantization (:mod:`recslm.quantize`) both read them from here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from recslm.config import CalibrationConfig
from recslm.data.records import RankingRecord
from recslm.errors import ConfigError, DataError
from recslm.models.prefix import make_groups


def _check_count(count: int, max_tokens: int | None) -> None:
    if count < 1:
        raise ConfigError(f"calibration: count must be at least 1, got {count}")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"calibration: max_tokens must be at least 1 (or None for no limit), got {max_tokens}")


def _as_tensor(ids: Sequence[int], max_tokens: int | None) -> torch.Tensor:
    # keep the *start*: under a causal mask the kept positions then have exactly the
    # activations of the full prompt; cutting the start would give contexts the model never sees
    kept = list(ids) if max_tokens is None else list(ids[:max_tokens])
    return torch.tensor(kept, dtype=torch.long)


def _round_robin(records: Sequence[RankingRecord], count: int, seed: int) -> list[int]:
    """Indices of ``count`` records: one candidate from each prompt group (shuffled) before a
    second from any.

    Candidates of one group share their prefix token for token, and prefix positions have
    identical activations in every candidate (causal attention), so a second candidate of
    a group adds mostly duplicate rows to X; spreading over groups gives more distinct rows.
    """
    by_group: dict[tuple[str, str, str], list[int]] = {}
    for index, rec in enumerate(records):
        by_group.setdefault((rec.member_id, rec.task, rec.prefix), []).append(index)
    rng = random.Random(seed)
    members = list(by_group.values())
    rng.shuffle(members)
    for indices in members:
        rng.shuffle(indices)
    picked: list[int] = []
    depth = 0
    while len(picked) < count:
        picked.extend(indices[depth] for indices in members if depth < len(indices))
        depth += 1
    return picked[:count]


def calibration_inputs(
    records: Sequence[RankingRecord],
    tokenizer: PreTrainedTokenizerBase,
    count: int,
    max_tokens: int | None = None,
    seed: int = 0,
) -> list[torch.Tensor]:
    """``count`` in-domain prompts (prefix + candidate token ids, exactly as recslm scores them).

    Records are picked reproducibly for (``records`` in this order, ``seed``), spread over
    prompt groups first (see :func:`_round_robin`). The answer token is not included: the
    model reads the answer from the last candidate token, so that is where scoring ends.
    ``max_tokens`` keeps the first tokens of longer prompts.

    Fewer records than ``count`` is a :class:`DataError`, not a silent shortfall: the
    calibration size is part of the experiment, and results from a smaller set than asked
    for are not comparable. Lower ``count`` to use all records.
    """
    _check_count(count, max_tokens)
    if len(records) < count:
        raise DataError(
            f"calibration: {count} prompts requested but only {len(records)} records are available; "
            f"lower the calibration count to at most {len(records)}"
        )
    chosen = [records[i] for i in _round_robin(records, count, seed)]
    prompts: list[torch.Tensor | None] = [None] * len(chosen)
    for group in make_groups(chosen, tokenizer):  # the scoring path's tokenization, prefix encoded once
        for position, candidate in zip(group.record_index, group.candidate_ids, strict=True):
            prompts[position] = _as_tensor(group.prefix_ids + candidate, max_tokens)
    return [p for p in prompts if p is not None]


def text_calibration_inputs(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    count: int,
    max_tokens: int | None = None,
    seed: int = 0,
) -> list[torch.Tensor]:
    """``count`` generic-text prompts (each text tokenized with the tokenizer's special start),
    picked reproducibly in a seeded order; blank texts are skipped.

    Texts are encoded lazily in the shuffled order, so a large corpus costs only the texts
    used. Too few usable texts is a :class:`DataError`, as for :func:`calibration_inputs`.
    """
    _check_count(count, max_tokens)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    prompts: list[torch.Tensor] = []
    for index in order:
        text = texts[index]
        if not isinstance(text, str):
            raise DataError(f"calibration text {index}: expected a string, got {type(text).__name__}")
        if not text.strip():
            continue
        ids = tokenizer.encode(text, add_special_tokens=True)
        if ids:
            prompts.append(_as_tensor(ids, max_tokens))
        if len(prompts) == count:
            return prompts
    raise DataError(
        f"calibration: {count} text prompts requested but only {len(prompts)} of {len(texts)} texts are non-blank; "
        f"lower the calibration count to at most {len(prompts)}"
    )


def configured_inputs(cfg: CalibrationConfig, train: Sequence[RankingRecord], tokenizer: PreTrainedTokenizerBase, seed: int) -> list[torch.Tensor]:
    """The calibration prompts a stage's ``calibration`` section asks for: in-domain training
    records, or generic text (the bundled clothing reviews' training split)."""
    if cfg.source == "records":
        return calibration_inputs(train, tokenizer, cfg.count, seed=seed)
    from recslm.data.reviews import build_review_splits, texts_of

    return text_calibration_inputs(texts_of(build_review_splits()["train"]), tokenizer, cfg.count, seed=seed)


def artifact_calibration_inputs(cfg: CalibrationConfig, data_dir: Path, tokenizer: PreTrainedTokenizerBase, seed: int, task: str = "ranking") -> list[torch.Tensor]:
    """The calibration prompts of a data artifact, as the task reads it. Ranking: the training
    records' prompts (:func:`configured_inputs`). Generative: with ``source: records``, training
    prompts followed by their reference responses (a writing model's activations cover both);
    with ``source: text``, the same generic text as ranking."""
    if task == "generative":
        if cfg.source == "records":
            from recslm.data.generation_artifact import load_generation_split

            texts = [r.prompt + r.response for r in load_generation_split(data_dir, "train")]
            return text_calibration_inputs(texts, tokenizer, cfg.count, seed=seed)
        return configured_inputs(cfg, [], tokenizer, seed)
    from recslm.data.build import load_split

    return configured_inputs(cfg, load_split(data_dir, "train"), tokenizer, seed)
