"""The layer-wise reconstruction objective every pruning method here is judged by.

A linear layer ``y = x Wᵀ`` (W: [out, in]) whose *input columns* come in groups: one
intermediate neuron of an MLP is one input column of ``down_proj``; one key/value group
of an attention layer is the ``heads_per_kv × head_dim`` input columns of ``o_proj`` fed
by the query heads that share that KV head. Pruning keeps a set S of groups and replaces
W by Ŵ, zero outside S. With calibration inputs X ([tokens, in]) and H = XᵀX:

    f(S, Ŵ) = ‖X Wᵀ − X Ŵᵀ‖²_F = tr((W − Ŵ) H (W − Ŵ)ᵀ)

For a fixed S the best Ŵ (the least-squares refit) is Ŵ_S = W H_{:,S} H_{S,S}⁻¹ and the
error is f(S) = tr(W H Wᵀ) − tr(W H_{:,S} H_{S,S}⁻¹ H_{S,:} Wᵀ). H is ridge-damped
(H + λ·mean(diag H)·I) so H_{S,S} is invertible also for dead or collinear inputs; the
damped H is used throughout, in the objective too, so every method is scored the same way.

All math is float64: Gram matrices of thousands of tokens have entries far apart in
size, and greedy elimination subtracts nearly equal numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recslm.errors import ConfigError


@dataclass(frozen=True)
class Groups:
    """``count`` groups of ``size`` consecutive input columns each (group g = columns g*size .. g*size+size-1)."""

    count: int
    size: int

    @property
    def width(self) -> int:
        return self.count * self.size

    def columns(self, groups: torch.Tensor | list[int]) -> torch.Tensor:
        """Input-column indices of the given groups, in group order."""
        g = torch.as_tensor(groups, dtype=torch.long).reshape(-1, 1)
        return (g * self.size + torch.arange(self.size)).reshape(-1)


def neuron_groups(intermediate_size: int) -> Groups:
    return Groups(intermediate_size, 1)


def kv_groups(num_heads: int, num_kv_heads: int, head_dim: int) -> Groups:
    """Groups of ``o_proj`` input columns: all query heads that share one KV head.

    transformers maps query head h to KV head h // (num_heads // num_kv_heads), so the
    query heads of KV group g are consecutive and so are their o_proj input columns.
    """
    if num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ConfigError(f"num_attention_heads={num_heads} is not a multiple of num_key_value_heads={num_kv_heads}")
    return Groups(num_kv_heads, (num_heads // num_kv_heads) * head_dim)


def keep_count(total: int, fraction: float, align: int = 1, field: str = "prune") -> int:
    """How many of ``total`` groups to keep when removing ``fraction`` of them.

    The kept count is rounded to the nearest multiple of ``align`` (widths that GPU
    kernels accept), and at least one ``align`` block is always kept.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{field}: fraction {fraction} must be in (0, 1)")
    if align < 1 or total % align:
        raise ConfigError(f"{field}: {total} groups are not a multiple of align={align}")
    keep = round(total * (1.0 - fraction) / align) * align
    return min(total - align, max(align, keep)) if total > align else total


def damp(gram: torch.Tensor, ridge: float) -> torch.Tensor:
    """H + ridge·mean(diag H)·I in float64 (a relative damping: it scales with the data)."""
    h = gram.to(torch.float64)
    scale = float(h.diagonal().mean()) if h.numel() else 0.0
    return h + (ridge * (scale if scale > 0 else 1.0)) * torch.eye(h.shape[0], dtype=torch.float64)


def refit(weight: torch.Tensor, h: torch.Tensor, keep_cols: torch.Tensor) -> torch.Tensor:
    """Least-squares weights on the kept columns: Ŵ_S = W H_{:,S} H_{S,S}⁻¹ ([out, |S|], float64)."""
    w = weight.to(torch.float64)
    h_ss = h[keep_cols][:, keep_cols]
    rhs = (w @ h[:, keep_cols]).T  # [|S|, out]
    return torch.linalg.solve(h_ss, rhs).T


def reconstruction_error(weight: torch.Tensor, h: torch.Tensor, keep_cols: torch.Tensor, new_weight: torch.Tensor | None = None) -> float:
    """f(S, Ŵ) = tr((W − Ŵ) H (W − Ŵ)ᵀ) where Ŵ is ``new_weight`` on the kept columns ([out, |S|]),
    or W's own kept columns when None (pruning without refit)."""
    w = weight.to(torch.float64)
    w_hat = torch.zeros_like(w)
    w_hat[:, keep_cols] = w[:, keep_cols] if new_weight is None else new_weight.to(torch.float64)
    diff = w - w_hat
    return float(torch.einsum("oi,ij,oj->", diff, h, diff))


def relative_error(weight: torch.Tensor, h: torch.Tensor, keep_cols: torch.Tensor, new_weight: torch.Tensor | None = None) -> float:
    """:func:`reconstruction_error` divided by ‖X Wᵀ‖² = tr(W H Wᵀ): 0 is perfect, 1 is "output zero"."""
    w = weight.to(torch.float64)
    total = float(torch.einsum("oi,ij,oj->", w, h, w))
    return reconstruction_error(weight, h, keep_cols, new_weight) / total if total > 0 else 0.0
