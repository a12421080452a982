"""Where prefill time goes: attention vs MLP per decoder layer, at several context lengths.

The paper (Figure 4) profiles the distilled student before pruning: at short contexts the
MLP dominates, at long ones attention grows, and that decides whether to prune neurons,
heads or both. This module times each layer's ``self_attn`` and ``mlp`` with forward
hooks during a real prefill (batch 1, random token ids: latency does not depend on
which tokens), on whatever device the model is on, and reports medians over repeats.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from recslm.models.surgery import decoder_layers


@dataclass
class ProfileResult:
    context_lengths: list[int]
    attn_ms: dict[int, list[float]]  # length -> per layer, median ms
    mlp_ms: dict[int, list[float]]
    prefill_ms: dict[int, float]  # length -> whole forward, median ms
    skipped: list[int]  # lengths beyond max_position_embeddings

    def shares(self, length: int) -> tuple[float, float]:
        """(attention, MLP) share of the time spent in the two, summed over layers."""
        attn, mlp = sum(self.attn_ms[length]), sum(self.mlp_ms[length])
        total = attn + mlp
        return (attn / total, mlp / total) if total > 0 else (0.0, 0.0)

    def recommend(self, min_share: float) -> dict[str, bool]:
        """Prune a part only if it holds at least ``min_share`` of the time at the longest length."""
        return recommend(self.dump()["shares"], min_share)

    def dump(self) -> dict[str, Any]:
        out = asdict(self)
        out["shares"] = {str(n): dict(zip(("attn", "mlp"), self.shares(n))) for n in self.attn_ms}
        return out


def recommend(shares: dict[str, dict[str, float]], min_share: float) -> dict[str, bool]:
    """Which parts to prune from the profile's ``shares`` ({length: {"attn", "mlp"}}, as stored):
    a part is worth pruning if it holds at least ``min_share`` of the time at the longest length."""
    longest = shares[max(shares, key=int)]
    return {"heads": longest["attn"] >= min_share, "mlp": longest["mlp"] >= min_share}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_ids(model: PreTrainedModel, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (1, length), generator=g).to(model.device)


@torch.no_grad()
def prefill_ms(model: PreTrainedModel, length: int, repeats: int = 3, on_warm: Callable[[], None] | None = None) -> float:
    """Median wall time of one prefill of ``length`` tokens, after one warm-up pass
    (``on_warm`` runs between the two, e.g. to forget what hooks saw during warm-up)."""
    ids = _random_ids(model, length)
    model.eval()
    model(input_ids=ids, use_cache=False)  # warm-up: allocator, kernels
    if on_warm is not None:
        on_warm()
    times = []
    for _ in range(repeats):
        _sync(model.device)
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        _sync(model.device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def profile_model(model: PreTrainedModel, context_lengths: list[int], repeats: int = 3) -> ProfileResult:
    """Per-layer attention and MLP milliseconds at each length (hooks around the submodules)."""
    model.eval()
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    lengths = [n for n in context_lengths if not limit or n <= limit]
    skipped = [n for n in context_lengths if n not in lengths]
    started: dict[tuple[int, str], float] = {}
    spent: dict[tuple[int, str], list[float]] = defaultdict(list)
    handles = []
    for i, layer in enumerate(decoder_layers(model)):
        for part, module in (("attn", layer.self_attn), ("mlp", layer.mlp)):
            def pre(_m, _a, key=(i, part)):
                _sync(model.device)
                started[key] = time.perf_counter()

            def post(_m, _a, _o, key=(i, part)):
                _sync(model.device)
                spent[key].append((time.perf_counter() - started[key]) * 1e3)

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    attn_ms: dict[int, list[float]] = {}
    mlp_ms: dict[int, list[float]] = {}
    totals: dict[int, float] = {}
    n_layers = len(decoder_layers(model))
    try:
        for length in lengths:
            totals[length] = prefill_ms(model, length, repeats, on_warm=spent.clear)
            attn_ms[length] = [statistics.median(spent[(i, "attn")]) for i in range(n_layers)]
            mlp_ms[length] = [statistics.median(spent[(i, "mlp")]) for i in range(n_layers)]
    finally:
        for h in handles:
            h.remove()
    return ProfileResult(lengths, attn_ms, mlp_ms, totals, skipped)


def profile_figure(result: ProfileResult, path: Path, title: str = "prefill time per layer") -> Path:
    """Stacked bars per context length: attention and MLP time summed over layers (cf. the paper's Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = result.context_lengths
    attn = [sum(result.attn_ms[n]) for n in lengths]
    mlp = [sum(result.mlp_ms[n]) for n in lengths]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    x = range(len(lengths))
    ax.bar(x, attn, label="attention", color="#1f77b4")
    ax.bar(x, mlp, bottom=attn, label="MLP", color="#ff7f0e")
    for i, n in enumerate(lengths):
        share = result.shares(n)[0]
        ax.text(i, attn[i] + mlp[i], f"{share:.0%} attn", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), [str(n) for n in lengths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("ms per prefill (all layers)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
