"""Teacher and student vocabularies: one tokenizer, output layers that may be padded.

Real checkpoints pad their embedding and output rows beyond the tokenizer (to a multiple of
64 or 128, for GPU-friendly shapes: Qwen3-0.6B has 151,936 rows for 151,669 tokens), and
two models that share a tokenizer often pad differently. The rows past ``len(tokenizer)``
are never a real token, so distillation compares the first ``len(tokenizer)`` logits of
each model and nothing else; what must agree is the tokenizer itself (checked from its
files, :func:`recslm.data.tokenizer.same_vocabulary`), not the output widths.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recslm.errors import TokenizerError

Head = Callable[[torch.Tensor], torch.Tensor]


def output_rows(model: PreTrainedModel) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def check_vocabulary(student: PreTrainedModel, teacher: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> None:
    """Every model must have an output row for every token of the shared tokenizer; padding
    beyond it may differ. Fewer rows means the model was built for another tokenizer."""
    sizes = {"tokenizer": len(tokenizer), "student": output_rows(student)}
    if teacher is not None:
        sizes["teacher"] = output_rows(teacher)
    short = [name for name, rows in sizes.items() if name != "tokenizer" and rows < len(tokenizer)]
    if short:
        raise TokenizerError(
            "teacher/student vocabulary mismatch: output vocabulary sizes "
            + ", ".join(f"{k}={v}" for k, v in sizes.items())
            + f"; the {' and the '.join(short)} cannot score every token of the tokenizer. A student must use the teacher's "
            "tokenizer (build it from an arch spec, or point its path at a model trained with the same tokenizer)"
        )


def tokenizer_logits(head: Head, vocab_size: int | None) -> Head:
    """``head`` restricted to the tokenizer's ``vocab_size`` tokens (padding rows dropped);
    ``head`` itself when there is nothing to drop."""
    if vocab_size is None:
        return head

    def sliced(hidden: torch.Tensor) -> torch.Tensor:
        logits = head(hidden)
        return logits[..., :vocab_size] if logits.shape[-1] > vocab_size else logits

    return sliced
