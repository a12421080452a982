"""White-box distillation losses: forward KL, reverse KL and JSD(beta), token-masked and chunked.

Conventions (p = teacher distribution, q = student distribution, both softmax(logits / T)):
- forward KL  = KL(p || q) = sum p (log p - log q)   (mode covering; the paper's ranking default)
- reverse KL  = KL(q || p) = sum q (log q - log p)   (mode seeking)
- JSD(beta)   = [beta KL(p || m) + (1 - beta) KL(q || m)] / (beta (1 - beta)),  m = beta p + (1 - beta) q

The JSD is divided by beta (1 - beta) so that it is continuous with the two KLs at its
ends: JSD(beta) -> forward KL as beta -> 0 and -> reverse KL as beta -> 1 (at exactly 0 and
1 the KLs are used). The plain, unnormalized generalized JSD vanishes at both ends, which
makes beta a weight and a scale at once; with this convention beta only interpolates.

With a temperature T the divergence is multiplied by T^2, so gradient magnitudes stay
comparable across temperatures (Hinton et al.).

Memory: the loss takes hidden states and LM heads rather than logits. It selects the
masked positions first, then runs them in row chunks under activation checkpointing,
so neither the B×T×V float32 logits of teacher and student nor their backward buffers
ever exist at once: peak extra memory is about two chunk×V blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
CHUNK_ELEMENTS = 1 << 22  # logits per chunk: small enough that a chunk's temporaries stay a few tens of MB


def divergence_from_logprobs(s: torch.Tensor, t: torch.Tensor, kind: Divergence, beta: float) -> torch.Tensor:
    """Per-row divergence between student and teacher log-probabilities over the same support."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return (t.exp() * (t - s)).sum(-1)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return (s.exp() * (s - t)).sum(-1)
    if kind == "jsd":
        m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1.0 - beta)]), dim=0)
        kl_t = (t.exp() * (t - m)).sum(-1)
        kl_s = (s.exp() * (s - m)).sum(-1)
        return (beta * kl_t + (1.0 - beta) * kl_s) / (beta * (1.0 - beta))
    raise ValueError(f"unknown divergence {kind!r}; expected forward_kl, reverse_kl or jsd")


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: Divergence,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-row divergence [N] between [N, V] student and teacher logits (float32 math)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return divergence_from_logprobs(s, t, kind, beta) * temperature**2


def topk_divergence(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    kind: Divergence,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-row divergence [N] against a teacher stored as top-k (ids [N, K], log-probs [N, K]).

    Both distributions are renormalized over the kept support: the teacher's k
    log-probs (at temperature T: softmax of logprob / T over the k, which equals the
    teacher's tempered softmax restricted to its top k), and the student's log-probs
    gathered at the same ids. With k = V this is exactly :func:`token_divergence`.
    """
    s_full = F.log_softmax(student_logits.float() / temperature, dim=-1)
    s = s_full.gather(-1, teacher_ids.long())
    s = s - torch.logsumexp(s, dim=-1, keepdim=True)
    t = F.log_softmax(teacher_logprobs.float() / temperature, dim=-1)
    return divergence_from_logprobs(s, t, kind, beta) * temperature**2


def _masked_rows(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, T, H] (or [N, H]) hidden states -> [M, H] rows where mask is true."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    if mask is None:
        return flat
    return flat[mask.reshape(-1).to(torch.bool)]


def _chunked_mean(
    block: Callable[..., torch.Tensor], rows: tuple[torch.Tensor, ...], chunk_size: int | None, vocab: int
) -> torch.Tensor:
    """Mean over rows of ``block(*row_slices)`` (which returns a sum), in checkpointed chunks.

    ``chunk_size``: rows per chunk; -1 sizes chunks to about ``CHUNK_ELEMENTS`` logits
    (16 MB of float32 per block, whatever the vocabulary); None computes all rows at once.
    """
    count = rows[0].shape[0]
    if chunk_size == -1:
        chunk_size = max(1, CHUNK_ELEMENTS // vocab)
    if chunk_size is None or chunk_size >= count:
        return block(*rows) / count
    total = rows[0].new_zeros((), dtype=torch.float32)
    for start in range(0, count, chunk_size):
        end = start + chunk_size
        total = total + checkpoint(block, *(r[start:end] for r in rows), use_reentrant=False)
    return total / count


def _vocab(head: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor) -> int:
    """Rows of the head's weight; under ZeRO-3 the weight is an empty shard and ``ds_shape`` is its real shape."""
    weight = getattr(head, "weight", None)
    if weight is None:
        return int(head(rows[:1]).shape[-1])
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def distill_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    student_head: Callable[[torch.Tensor], torch.Tensor],
    teacher_head: Callable[[torch.Tensor], torch.Tensor],
    mask: torch.Tensor | None = None,
    *,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int | None = -1,
) -> torch.Tensor:
    """Mean divergence over the masked positions, from hidden states and LM heads.

    ``chunk_size``: rows per chunk; -1 sizes chunks to about ``CHUNK_ELEMENTS`` logits;
    None computes all rows at once (the reference the chunked path must equal). The
    teacher side never receives gradients.
    """
    s_rows = _masked_rows(student_hidden, mask)
    t_rows = _masked_rows(teacher_hidden, mask).detach()
    if s_rows.shape[0] == 0:
        return student_hidden.sum() * 0.0

    def block(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher_head(t)
        return token_divergence(student_head(s), teacher_logits, kind, beta=beta, temperature=temperature).sum()

    return _chunked_mean(block, (s_rows, t_rows), chunk_size, _vocab(student_head, s_rows))


def distill_loss_topk(
    student_rows: torch.Tensor,
    student_head: Callable[[torch.Tensor], torch.Tensor],
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    *,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int | None = -1,
) -> torch.Tensor:
    """Mean :func:`topk_divergence` over rows [M, H] against stored teacher top-k [M, K], chunked."""
    if student_rows.shape[0] == 0:
        return student_rows.sum() * 0.0

    def block(s: torch.Tensor, ids: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
        return topk_divergence(student_head(s), ids, lp, kind, beta=beta, temperature=temperature).sum()

    return _chunked_mean(block, (student_rows, teacher_ids, teacher_logprobs), chunk_size, _vocab(student_head, student_rows))
