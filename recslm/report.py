"""A run's results as Markdown: what the person who pressed "Run" reads where they pressed it.

The Prefect UI shows it as the run's artifact, MLflow as the parent run's description; both
come from ``summary.json``'s model, so they say what the CLI's table says: the models with val
(decided on) and test (reported) AUC, sizes and deltas, the stages, the winner, the registry's
verdict, and where to look next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def mlflow_run_url(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """The parent run's page on an MLflow server (None for a local SQLite backend: no UI to link)."""
    if not (run_id and experiment_id and tracking_uri.startswith(("http://", "https://"))):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def summary_markdown(summary: Mapping[str, Any], *, mlflow_url: str | None = None, registry_url: str | None = None) -> str:
    """The run's results table, stages, winner and registry verdict as Markdown."""
    lines = [f"# recslm run `{summary['run_id']}`", ""]
    winner = summary.get("winner")
    lines.append(f"**Winner (chosen on val):** `{winner}`" if winner else "**Winner:** none (no student within the quality bar, or no students)")
    registry = summary.get("registry")
    if registry:
        promotion = registry.get("promotion") or {}
        where = f" ([registry]({registry_url}))" if registry_url else ""
        lines.append(
            f"**Registry:** `{registry.get('candidate')}` is {registry.get('model_name')} v{registry.get('candidate_version')}: "
            f"**{promotion.get('verdict', '?')}** ({_cell(promotion.get('reason', ''))}){where}"
        )
    gate = summary.get("teacher_gate")
    if gate and gate.get("metric") == "val_loss":
        lines.append(f"**Teacher gate:** {'passes' if gate.get('passed') else 'fails'} (teacher val loss {_num(gate.get('teacher_val_loss'), '.4f')}; "
                     f"best SFT {gate.get('best_sft') or '-'} {_num(gate.get('best_sft_val_loss'), '.4f')})")  # fmt: skip
    elif gate:
        lines.append(
            f"**Teacher gate:** {'passes' if gate.get('passed') else 'fails'} (teacher val {_num(gate.get('teacher_val_auc_mean'), '.4f')}; "
            f"best baseline {gate.get('best_baseline') or '-'} {_num(gate.get('best_baseline_val_auc_mean'), '.4f')})"
        )
    if mlflow_url:
        lines.append(f"**MLflow:** [parent run]({mlflow_url})")
    elif summary.get("mlflow_run_id"):
        lines.append(f"**MLflow run:** `{summary['mlflow_run_id']}`")
    if any(m.get("task") == "generative" for m in summary["models"]):
        lines += generative_rows(summary["models"], winner)
    else:
        lines += ranking_rows(summary["models"], winner)
    lines += ["", "## Stages", "", "| stage | cached | wall s | key |", "|---|---|---:|---|"]
    for name, rec in summary["stages"].items():
        lines.append(f"| {_cell(name)} | {'yes' if rec['cached'] else 'no'} | {rec['wall_s']:.1f} | `{rec['key'][:12]}` |")
    lines += ["", f"{len(summary['stages'])} stages in {summary['wall_s']:.1f} s; summary: `{summary.get('run_dir', '')}/summary.json`"]
    return "\n".join(lines) + "\n"


def _models_section(intro: str, head: list[str], models: Any, winner: str | None, cells: Any) -> list[str]:
    """The Models section: ``intro``, then one row per model (the winner in bold) with ``cells(model)`` after name and role."""
    lines = ["", "## Models", "", intro, ""]
    lines.append("| " + " | ".join(["model", "role", *head]) + " |")
    lines.append("|---|---|" + "---:|" * len(head))
    for m in models:
        name = f"**{m['name']}**" if m["name"] == winner else m["name"]
        lines.append("| " + " | ".join([_cell(name), m["role"], *cells(m)]) + " |")
    return lines


def generative_rows(models: Any, winner: str | None) -> list[str]:
    """The generative task's models table: response loss (val decides), the sentiment task metric, KL to the teacher."""
    intro = ("Response loss on val (what selection decides on) and test (reported once); increase vs the teacher; "
             "sentiment agreement with the rating (balanced accuracy); forward KL from the teacher per response token.")  # fmt: skip
    head = ["params", "non-emb", "val loss", "test loss", "val increase %", "test sentiment", "test KL"]
    return _models_section(intro, head, models, winner, lambda m: [
        f"{m['params']:,}", _num(m.get("params_non_embedding"), ","), _num(m.get("val_loss"), ".4f"), _num(m.get("loss"), ".4f"),
        _num(m.get("val_loss_increase_pct"), "+.2f"), _num(m.get("sentiment"), ".3f"), _num(m.get("divergence"), ".4f"),
    ])  # fmt: skip


def ranking_rows(models: Any, winner: str | None) -> list[str]:
    """The ranking task's models table: mean AUC on val (decides) and test, deltas vs the teacher."""
    intro = "AUC mean on val (what selection decides on) and test (reported once); delta vs the teacher."
    head = ["params", "non-emb", "bytes", "val AUC", "test AUC", "test delta %", "val delta %"]
    return _models_section(intro, head, models, winner, lambda m: [
        f"{m['params']:,}", _num(m.get("params_non_embedding"), ","), f"{m['bytes']:,}", _num(m.get("val_auc_mean"), ".4f"),
        f"{m['auc_mean']:.4f}", f"{m['auc_delta_pct']:+.2f}", _num(m.get("val_auc_delta_pct"), "+.2f"),
    ])  # fmt: skip
