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
    if base.task == "generative":
        return _generative_table(base, variants)
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


def _layer_cell(stage_metrics: dict[str, Any]) -> str:
    errors = stage_metrics.get("layer_errors", {})
    if "gptq_mean_error" not in errors:
        return ""
    cell = f"{errors['gptq_mean_error']:.2e}"
    if "quantease_mean_error" in errors:
        cell += f" / {errors['quantease_mean_error']:.2e} (lower on {errors['quantease_below_gptq']}/{errors['layers']} layers)"
    return cell


def _generative_table(base: ModelRecord, variants: Sequence[Variant]) -> str:
    """The generative task's table: val and test response loss, the val-loss increase vs the
    unquantized model, the sentiment metric, weight bytes and the layer errors."""
    head = ["scheme", "val loss", "test loss", "val increase vs unquantized %", "test sentiment", "weights MB", "size ×", "layer error (GPTQ / QuantEase)"]
    rows = [["none (" + base.name + ")", f"{base.val_loss:.4f}", f"{base.loss:.4f}", "0.00", f"{base.sentiment:.3f}", f"{base.bytes / 1e6:.3f}", "1.00", ""]]
    for v in variants:
        r = v.record
        rows.append([v.scheme, f"{r.val_loss:.4f}", f"{r.loss:.4f}", f"{100.0 * (r.val_loss - base.val_loss) / base.val_loss:+.2f}", f"{r.sentiment:.3f}",
                     f"{r.bytes / 1e6:.3f}", f"{r.bytes / base.bytes:.2f}", _layer_cell(v.stage_metrics)])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
