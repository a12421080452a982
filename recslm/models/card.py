"""Export a trained teacher as a shipped checkpoint with its card.

The demo starts from an existing teacher, as the paper starts from an existing foundation
model: ``make teacher`` trains it with ``configs/teacher.yaml`` and this module copies the
teacher out of that run's store into ``models/demo-teacher`` with a card that says how it was
made (command, commit, config hash, the data section and the data stage's key) and what it
scores (val and test AUC per task, beside the non-LM baselines fitted on the same records).

The card is both human (``README.md``) and machine readable (``card.json``): the demo config's
data section is checked against the card's, so the demo evaluates the teacher on exactly the
val and test records it was selected and reported on.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path
from typing import Any

from recslm.errors import ConfigError
from recslm.jsonfile import write_json

CARD_JSON = "card.json"
CARD_README = "README.md"
CHECK_RECORDS = 16  # two groups: enough to tell other weights apart, cheap enough for every test run
MAX_BYTES = 15 * 1024 * 1024  # the shipped checkpoint lives in git: keep it small
DATA_TERMS = Path(__file__).resolve().parents[1] / "data" / "bundled" / "movielens-100k" / "README.md"


def _model_row(summary: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [m for m in summary.get("models", []) if m.get("role") == role]


def teacher_card(summary: dict[str, Any], data_section: dict[str, Any], command: str, commit: str | None) -> dict[str, Any]:
    """The card's content from a finished run's summary.json (a teacher run: data, baselines,
    teacher, evaluate) and the data section of the config that produced it."""
    teachers = _model_row(summary, "teacher")
    if not teachers:
        raise ConfigError(f"run {summary.get('run_id')}: summary.json has no teacher model; run the teacher config to completion first")
    teacher = teachers[0]
    stages = summary.get("stages", {})
    if "teacher" not in stages or "data" not in stages:
        raise ConfigError(f"run {summary.get('run_id')}: summary.json lacks the data or teacher stage record")
    stage = stages["teacher"]["metrics"]
    data = stages["data"]["metrics"]
    return {
        "name": "demo-teacher",
        "created": datetime.date.today().isoformat(),
        "command": command,
        "commit": commit,
        "recslm_version": summary.get("recslm_version"),
        "run_id": summary.get("run_id"),
        "config_hash": summary.get("config_hash"),
        "data_key": stages["data"]["key"],
        "teacher_key": stages["teacher"]["key"],
        "data": data_section,
        "train_groups": stage.get("train_groups"),
        "train_examples": stage.get("train_examples"),
        "records": {split: sum(t["records"] for t in tasks.values()) for split, tasks in data.get("splits", {}).items()},
        "architecture": {k: stage.get(k) for k in ("model_type", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "num_experts")},
        "params": teacher["params"],
        "params_non_embedding": teacher.get("params_non_embedding"),
        "bytes": teacher["bytes"],
        "training": {k: stage.get(k) for k in ("steps", "best_step", "best_val", "stopped_early", "train_wall_s", "train_examples_per_s", "foundation_wall_s", "val_history")},
        "teacher": {"val_auc": teacher["val_auc"], "val_auc_mean": teacher["val_auc_mean"], "auc": teacher["auc"], "auc_mean": teacher["auc_mean"]},
        "baselines": {
            m["name"]: {"val_auc": m["val_auc"], "val_auc_mean": m["val_auc_mean"], "auc": m["auc"], "auc_mean": m["auc_mean"]}
            for m in _model_row(summary, "baseline")
        },
        "teacher_gate": summary.get("teacher_gate"),
    }


def _auc_table(card: dict[str, Any]) -> str:
    rows = [("teacher", card["teacher"])] + list(card["baselines"].items())
    tasks = sorted(card["teacher"]["auc"])
    head = "| model | " + " | ".join(f"val {t}" for t in tasks) + " | val mean | " + " | ".join(f"test {t}" for t in tasks) + " | test mean |"
    lines = [head, "|" + "---|" * (2 * len(tasks) + 3)]
    for name, r in rows:
        cells = [f"{r['val_auc'][t]:.4f}" for t in tasks] + [f"{r['val_auc_mean']:.4f}"] + [f"{r['auc'][t]:.4f}" for t in tasks] + [f"**{r['auc_mean']:.4f}**"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curve(history: list[dict[str, float]] | None) -> str:
    if not history:
        return ""
    return "; val mean AUC during training: " + ", ".join(f"{int(h['step'])}: {h['val_auc_mean']:.4f}" for h in history)


def _gate_lines(card: dict[str, Any]) -> str:
    gate = card.get("teacher_gate") or {}
    lines = [
        f"- teacher - {gate.get('best_baseline')} on {split}: {d['difference']:+.4f}, 95 % interval [{d['low']:+.4f}, {d['high']:+.4f}] "
        f"(paired bootstrap over {int(d['members'])} members)"
        for split, d in (gate.get("vs_best_baseline") or {}).items()
    ]
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def card_markdown(card: dict[str, Any]) -> str:
    """The human card: what it is, how it was made, what it scores, and the data's terms."""
    arch = card["architecture"]
    training = card["training"]
    terms = DATA_TERMS.read_text().split("## Terms of use", 1)[1].split("\n## ", 1)[0].strip() if DATA_TERMS.is_file() else ""
    return f"""# demo-teacher

The teacher `configs/demo.yaml` starts from: a {arch['model_type']} mixture of experts (hidden {arch['hidden_size']},
{arch['num_layers']} layers, {arch['num_experts']} experts of width {arch['intermediate_size']}; {card['params']:,} parameters,
{card['params_non_embedding']:,} without embeddings and head; {card['bytes']:,} bytes of weights), trained from scratch by
recslm on the MovieLens 100K ranking records of the demo (tasks like, love, next) with its own BPE tokenizer.

## How it was made

    {card['command']}

- commit `{card['commit']}`, recslm {card['recslm_version']}, run `{card['run_id']}`, config hash `{card['config_hash']}`
- data stage key `{card['data_key']}`; records: {', '.join(f"{s} {n:,}" for s, n in card['records'].items())}
  ({card['train_groups']:,} train groups)
- training: {training['steps']} steps, best step {training['best_step']} (the checkpoint with the best val mean AUC on the
  val sample scored during training, {training['best_val']:.4f}, is kept), {training['train_wall_s']:.0f} s on 2 CPU cores
  ({training['train_examples_per_s']} examples/s){_curve(training.get("val_history"))}

## What it scores

Same val and test records for every row; the baselines are fitted on the same train records
(recslm's `baselines` stage). The checkpoint was chosen on val; test is reported once.

{_auc_table(card)}
{_gate_lines(card)}

`card.json` holds the same figures and the full data section; `tests/unit/test_demo_teacher.py` checks that
`configs/demo.yaml` builds the same records.

## Data terms

This checkpoint is a transformation of MovieLens 100K and falls under its terms:

{terms}
"""


def score_check(summary: dict[str, Any], count: int = CHECK_RECORDS) -> list[dict[str, Any]]:
    """The first ``count`` val records with the teacher's score from the run's evaluate stage:
    a test scores them with the shipped weights and must get the same numbers, which ties the
    checkpoint to the card's figures."""
    import pandas as pd  # only when exporting

    stages = summary["stages"]
    if "evaluate" not in stages:
        raise ConfigError(f"run {summary.get('run_id')}: summary.json has no evaluate stage record")
    scores = pd.read_parquet(Path(stages["evaluate"]["uri"].removeprefix("file://")) / "scores-val.parquet").head(count)
    records = pd.read_parquet(Path(stages["data"]["uri"].removeprefix("file://")) / "records" / "val.parquet").head(count)
    check = []
    for (_, score), (_, record) in zip(scores.iterrows(), records.iterrows(), strict=True):
        if (str(score["member_id"]), score["task"], str(score["item_id"])) != (str(record["member_id"]), record["task"], str(record["item_id"])):
            raise ConfigError("evaluate scores-val.parquet and the data stage's val records are not in the same order")
        check.append({
            "member_id": str(record["member_id"]), "task": record["task"], "prefix": record["prefix"],
            "candidate": record["candidate"], "label": int(record["label"]), "score": float(score["score"]),
        })  # fmt: skip
    return check


def export_teacher(summary_file: Path, data_section: dict[str, Any], out: Path, command: str, commit: str | None = None, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Copy the run's teacher into ``out`` (replacing it only once the copy is complete) and write its card."""
    if not summary_file.is_file():
        raise ConfigError(f"{summary_file}: no summary.json; run the teacher config first (make teacher)")
    summary = json.loads(summary_file.read_text())
    card = teacher_card(summary, data_section, command, commit)
    card["check"] = score_check(summary)
    model_dir = Path(summary["stages"]["teacher"]["uri"].removeprefix("file://")) / "model"
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: the teacher artifact has no model folder (a remote store? materialize it first)")
    size = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
    if size > max_bytes:
        raise ConfigError(f"{model_dir}: {size:,} bytes; a shipped teacher must stay under {max_bytes:,} bytes (make the teacher smaller)")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging)
    write_json(staging / CARD_JSON, card)
    (staging / CARD_README).write_text(card_markdown(card))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return card
