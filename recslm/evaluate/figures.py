"""Figures the pipeline logs: AUC delta per student, distillation vs SFT (the paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DeltaBar:
    student: str
    params: int
    kd_delta_pct: float
    sft_delta_pct: float | None = None


def auc_delta_figure(bars: Sequence[DeltaBar], path: Path, *, max_auc_drop_pct: float | None = None) -> Path:
    """Grouped bars of mean-AUC delta vs the teacher (%) per student, KD beside SFT; the bar as a line.

    matplotlib is imported here, with the non-interactive Agg backend, so a pipeline on
    a headless worker never needs a display and ``import recslm`` stays light.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(bars, key=lambda b: b.params)
    x = range(len(ordered))
    width = 0.38
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(ordered), 3.6))
    ax.bar([i - width / 2 for i in x], [b.kd_delta_pct for b in ordered], width, label="distilled (KD)", color="#1f77b4")
    sft = [(i, b.sft_delta_pct) for i, b in zip(x, ordered) if b.sft_delta_pct is not None]
    if sft:
        ax.bar([i + width / 2 for i, _ in sft], [v for _, v in sft], width, label="SFT only", color="#ff7f0e")
    if max_auc_drop_pct is not None:
        ax.axhline(-max_auc_drop_pct, color="grey", linestyle="--", linewidth=1, label=f"bar (-{max_auc_drop_pct:g} %)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(list(x), [f"{b.student}\n{b.params / 1e6:.2f}M" for b in ordered])
    ax.set_ylabel("mean AUC delta vs teacher (%)")
    ax.set_title("Students: distillation vs SFT")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
