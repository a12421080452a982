"""Evaluate a generative model: response loss, divergence to the teacher, and the task metric.

- **loss**: mean cross-entropy per reference-response token (EOS included) over the whole
  split, the generative val loss every decision reads (selection, the teacher gate).
- **divergence**: forward KL from the teacher per reference-response token, when the
  teacher is given (how far the student still is from what it was distilled from).
- **sentiment** (:mod:`recslm.evaluate.sentiment`): the model writes a response to the
  first ``generate_records`` prompts of the split (greedy, up to ``max_new_tokens``), and
  the balanced accuracy of the judged sentiment against the stated rating is reported,
  beside the same judge's score on the reference reviews (the ceiling).

Greedy decoding, not sampling: the metric is about what the model prefers to write, and
greedy gives the same text on every run of the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recslm.data.reviews import GenerationRecord
from recslm.data.tokenizer import encode_prefix, load_tokenizer, same_vocabulary
from recslm.errors import TokenizerError
from recslm.evaluate.sentiment import SentimentJudge
from recslm.models.factory import count_non_embedding_parameters, count_parameters, directory_bytes
from recslm.models.placement import load_placed
from recslm.train.generative import eos_token_id, pad_token_id, response_loss, sample_responses, teacher_divergence

GENERATE_BATCH = 16


def greedy_responses(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = GENERATE_BATCH) -> list[str]:
    """What ``model`` writes after each prompt (greedy, stopping at EOS), as text."""
    pad, eos = pad_token_id(tokenizer), eos_token_id(tokenizer)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = [encode_prefix(tokenizer, p) for p in prompts[start : start + batch_size]]
        for written in sample_responses(model, rows, pad_id=pad, eos_id=eos, temperature=0.0, max_new_tokens=max_new_tokens):
            texts.append(tokenizer.decode([t for t in written if t != eos], skip_special_tokens=True))
    return texts


def evaluate_split(
    model: Any, tokenizer: Any, records: Sequence[GenerationRecord], judge: SentimentJudge, *,
    teacher: Any | None, generate_records: int, max_new_tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """One split's metrics and a sample of what the model wrote."""
    started = time.perf_counter()
    loss = response_loss(model, tokenizer, records)
    loss_s = time.perf_counter() - started
    shown = list(records[:generate_records])
    started = time.perf_counter()
    written = greedy_responses(model, tokenizer, [r.prompt for r in shown], max_new_tokens)
    generate_s = time.perf_counter() - started
    ratings = [r.rating for r in shown]
    metrics: dict[str, Any] = {
        "loss": loss,
        "examples": len(records),
        "sentiment": judge.agreement(written, ratings),
        "sentiment_reference": judge.agreement([r.response for r in shown], ratings),
        "generated": len(shown),
        "generated_tokens_mean": sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in written) / max(len(written), 1),
        "loss_s": round(loss_s, 3),
        "generate_s": round(generate_s, 3),
        "samples": [{"prompt": r.prompt, "reference": r.response, "written": w} for r, w in zip(shown[:5], written[:5])],
    }
    if teacher is not None:
        metrics["divergence"] = teacher_divergence(model, teacher, tokenizer, records, "forward_kl")
    return metrics


def evaluate_generation(
    model_dir: Path, splits: dict[str, Sequence[GenerationRecord]], train: Sequence[GenerationRecord], *, data_tokenizer_dir: Path,
    teacher_dir: Path | None, generate_records: int, max_new_tokens: int, trust_remote_code: bool = False,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Metrics of the model in ``model_dir`` on each of ``splits`` (name -> records), plus its size under ``"model"``."""
    tokenizer = load_tokenizer(model_dir, trust_remote_code)
    if not same_vocabulary(tokenizer, load_tokenizer(data_tokenizer_dir)):
        raise TokenizerError(f"{model_dir}: the model's tokenizer differs from the data's tokenizer in {data_tokenizer_dir}")
    model = load_placed(model_dir, trust_remote_code)
    teacher = load_placed(teacher_dir, trust_remote_code) if teacher_dir is not None else None
    judge = SentimentJudge.fit(train)
    out = {name: evaluate_split(model, tokenizer, records, judge, teacher=teacher, generate_records=generate_records, max_new_tokens=max_new_tokens)
           for name, records in splits.items()}  # fmt: skip
    out["model"] = {"params": count_parameters(model), "params_non_embedding": count_non_embedding_parameters(model), "bytes": directory_bytes(model_dir)}
    return out
