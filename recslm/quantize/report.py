"""The quantization table of a run: scheme × metric, like the paper's Table 7."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recslm.summary import ModelRecord


@dataclass(frozen=True)
class Variant:
    scheme: str
    record: ModelRecord
    stage_metrics: dict[str, Any]  # the quantize stage's metrics (layer errors)


def quantization_table(base: ModelRecord, variants: Sequence[Variant]) -> str:
    """A markdown table: mean and per-task AUC, delta vs the unquantized model, weight bytes,
    and for the GPTQ-based schemes the mean layer error (and where QuantEase beat GPTQ)."""
    tasks = sorted(base.auc)
    head = ["scheme", "mean AUC", *tasks, "Δ vs unquantized %", "weights MB", "size ×", "layer error (GPTQ / QuantEase)"]
    rows = [["none (" + base.name + ")", f"{base.auc_mean:.4f}", *(f"{base.auc[t]:.4f}" for t in tasks), "0.00", f"{base.bytes / 1e6:.3f}", "1.00", ""]]
    for v in variants:
        errors = v.stage_metrics.get("layer_errors", {})
        cell = ""
        if "gptq_mean_error" in errors:
            cell = f"{errors['gptq_mean_error']:.2e}"
            if "quantease_mean_error" in errors:
                cell += f" / {errors['quantease_mean_error']:.2e} (lower on {errors['quantease_below_gptq']}/{errors['layers']} layers)"
        delta = 100.0 * (v.record.auc_mean - base.auc_mean) / base.auc_mean
        rows.append([
            v.scheme, f"{v.record.auc_mean:.4f}", *(f"{v.record.auc.get(t, float('nan')):.4f}" for t in tasks),
            f"{delta:+.2f}", f"{v.record.bytes / 1e6:.3f}", f"{v.record.bytes / base.bytes:.2f}", cell,
        ])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
