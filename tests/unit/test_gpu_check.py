"""benchmarks/gpu_check.py (`make gpu-check`) as far as a CPU allows: it refuses to run without
CUDA, and its comparison of two run summaries flags what it should. The GPU run itself has not
happened on this project's machines (README, Running on GPUs)."""

from __future__ import annotations

import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def _summary(aucs: dict[str, float], throughput: dict[str, float]) -> dict:
    return {
        "models": [{"name": n, "role": "baseline" if n == "popularity" else "student", "auc_mean": a} for n, a in aucs.items()],
        "stages": {f"distill.{n}": {"uri": "/nowhere", "metrics": {"train_examples_per_s": t}} for n, t in throughput.items()},
    }


def test_without_cuda_it_says_so_and_exits_2(gpu_check, monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu-check.json").exists()


def test_auc_rows_flag_a_model_beyond_the_tolerance_and_skip_baselines(gpu_check):
    cpu = _summary({"teacher": 0.80, "s": 0.75, "popularity": 0.6}, {})
    gpu = _summary({"teacher": 0.803, "s": 0.74, "popularity": 0.7}, {})
    rows = {r["model"]: r for r in gpu_check.auc_rows(cpu, gpu)}
    assert set(rows) == {"teacher", "s"}
    assert rows["teacher"]["within"] and rows["teacher"]["delta"] == pytest.approx(0.003)
    assert not rows["s"]["within"] and rows["s"]["delta"] == pytest.approx(-0.01)


def test_speedup_rows_are_bf16_over_fp32_per_student(gpu_check):
    rows = gpu_check.speedup_rows(_summary({}, {"s": 300.0, "s-sft": 200.0}), _summary({}, {"s": 100.0, "s-sft": 100.0}))
    assert [(r["student"], r["ratio"]) for r in rows] == [("s", 3.0), ("s-sft", 2.0)]
    text = gpu_check.markdown({"gpu": "x", "auc": [], "throughput": rows, "sglang": []})
    assert "| s | 300.0 | 100.0 | 3.00x |" in text
