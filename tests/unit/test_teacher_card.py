"""Exporting a run's teacher as a shipped checkpoint with its card."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recslm.errors import ConfigError
from recslm.models.card import CARD_JSON, CARD_README, export_teacher

AUC = {"like": 0.8, "love": 0.7, "next": 0.9}


def _model(name: str, role: str, shift: float) -> dict:
    auc = {t: v + shift for t, v in AUC.items()}
    mean = sum(auc.values()) / 3
    return {"name": name, "role": role, "params": 10, "params_non_embedding": 4, "bytes": 40, "auc": auc, "auc_mean": mean, "val_auc": auc, "val_auc_mean": mean}


def _run(tmp_path, weights: bytes = b"w" * 100):
    store = tmp_path / "store"
    (store / "teacher" / "model").mkdir(parents=True)
    (store / "teacher" / "model" / "model.safetensors").write_bytes(weights)
    (store / "data" / "records").mkdir(parents=True)
    rows = [{"member_id": str(i // 8), "task": "like", "prefix": f"P{i // 8}\n", "candidate": f"C{i}\nAnswer:", "label": i % 2, "item_id": str(i)} for i in range(24)]
    pd.DataFrame(rows).to_parquet(store / "data" / "records" / "val.parquet")
    (store / "evaluate").mkdir()
    pd.DataFrame([{**{k: r[k] for k in ("member_id", "task", "item_id", "label")}, "score": i / 24} for i, r in enumerate(rows)]).to_parquet(store / "evaluate" / "scores-val.parquet")
    stage = {"key": "k", "cached": False, "wall_s": 1.0}
    summary = {
        "run_id": "t", "config_hash": "h", "recslm_version": "0.2.0",
        "stages": {
            "data": {**stage, "uri": str(store / "data"), "metrics": {"splits": {"val": {"like": {"records": 24}}}}},
            "teacher": {**stage, "uri": str(store / "teacher"), "metrics": {"model_type": "mixtral", "hidden_size": 8, "num_layers": 1, "num_heads": 1, "num_kv_heads": 1, "intermediate_size": 8, "num_experts": 2, "steps": 10, "best_step": 5, "best_val": 0.8, "train_wall_s": 3.0, "train_examples_per_s": 9.0, "train_groups": 3,
                                                                            "val_history": [{"step": 5, "val_auc_mean": 0.8, "val_loss": 0.5}, {"step": 10, "val_auc_mean": 0.79, "val_loss": 0.5}]}},
            "evaluate": {**stage, "uri": str(store / "evaluate"), "metrics": {}},
        },
        "models": [_model("teacher", "teacher", 0.0), _model("logistic_regression", "baseline", -0.05)],
    }  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path / "summary.json"


def test_export_copies_the_model_and_writes_the_card(tmp_path):
    out = tmp_path / "models" / "demo-teacher"
    out.mkdir(parents=True)
    (out / "stale.bin").write_text("old")
    card = export_teacher(_run(tmp_path), {"history_len": 10}, out, "make teacher", "abc")
    assert (out / "model.safetensors").read_bytes() == b"w" * 100
    assert not (out / "stale.bin").exists()
    saved = json.loads((out / CARD_JSON).read_text())
    assert saved["data"] == {"history_len": 10} and saved["commit"] == "abc" and saved["command"] == "make teacher"
    assert saved["baselines"]["logistic_regression"]["auc_mean"] == pytest.approx(0.75)
    assert [c["score"] for c in card["check"]] == pytest.approx([i / 24 for i in range(16)])
    assert card["check"][9]["candidate"] == "C9\nAnswer:" and card["check"][9]["label"] == 1
    readme = (out / CARD_README).read_text()
    assert "make teacher" in readme and "| logistic_regression |" in readme and "Harper" in readme
    assert "val mean AUC during training: 5: 0.8000, 10: 0.7900" in readme


def test_export_refuses_a_checkpoint_too_large_to_ship_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "demo-teacher"
    out.mkdir()
    (out / "model.safetensors").write_text("shipped")
    with pytest.raises(ConfigError, match="must stay under 50 bytes"):
        export_teacher(_run(tmp_path), {}, out, "make teacher", max_bytes=50)
    assert (out / "model.safetensors").read_text() == "shipped"


def test_export_refuses_scores_out_of_record_order(tmp_path):
    summary = _run(tmp_path)
    scores = tmp_path / "store" / "evaluate" / "scores-val.parquet"
    pd.read_parquet(scores).iloc[::-1].to_parquet(scores)
    with pytest.raises(ConfigError, match="not in the same order"):
        export_teacher(summary, {}, tmp_path / "out", "make teacher")


def test_export_needs_a_finished_run(tmp_path):
    with pytest.raises(ConfigError, match="make teacher"):
        export_teacher(tmp_path / "summary.json", {}, tmp_path / "out", "make teacher")
