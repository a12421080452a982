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


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: Divergence,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-row divergence [N] between [N, V] student and teacher logits (float32 math)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        out = (t.exp() * (t - s)).sum(-1)
    elif kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        out = (s.exp() * (s - t)).sum(-1)
    elif kind == "jsd":
        m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log(1.0 - beta)]), dim=0)
        kl_t = (t.exp() * (t - m)).sum(-1)
        kl_s = (s.exp() * (s - m)).sum(-1)
        out = (beta * kl_t + (1.0 - beta) * kl_s) / (beta * (1.0 - beta))
    else:
        raise ValueError(f"unknown divergence {kind!r}; expected forward_kl, reverse_kl or jsd")
    return out * temperature**2


def _masked_rows(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, T, H] (or [N, H]) hidden states -> [M, H] rows where mask is true."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    if mask is None:
        return flat
    return flat[mask.reshape(-1).to(torch.bool)]


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

    ``chunk_size``: rows per chunk; -1 sizes chunks to about ``CHUNK_ELEMENTS`` logits
    (16 MB of float32 per block, whatever the vocabulary); None computes all rows at once
    (the reference the chunked path must equal). The teacher side never receives gradients.
    """
    s_rows = _masked_rows(student_hidden, mask)
    t_rows = _masked_rows(teacher_hidden, mask).detach()
    count = s_rows.shape[0]
    if count == 0:
        return student_hidden.sum() * 0.0

    def block(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher_head(t)
        return token_divergence(student_head(s), teacher_logits, kind, beta=beta, temperature=temperature).sum()

    if chunk_size == -1:
        chunk_size = max(1, CHUNK_ELEMENTS // student_head(s_rows[:1]).shape[-1])
    if chunk_size is None or chunk_size >= count:
        return block(s_rows, t_rows) / count
    total = s_rows.new_zeros((), dtype=torch.float32)
    for start in range(0, count, chunk_size):
        end = start + chunk_size
        total = total + checkpoint(block, s_rows[start:end], t_rows[start:end], use_reentrant=False)
    return total / count
