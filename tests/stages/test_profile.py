"""Prefill profile: per-layer attention vs MLP time, skipped lengths, the pruning recommendation."""

from __future__ import annotations

import pytest

from recslm.evaluate.profile import profile_model, recommend
from tests.helpers import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_times_every_layer_and_skips_lengths_beyond_the_model():
    model = tiny_model(tiny_tokenizer(), "llama")
    model.config.max_position_embeddings = 64
    result = profile_model(model, [16, 64, 128], repeats=2)
    assert result.context_lengths == [16, 64] and result.skipped == [128]
    for n in result.context_lengths:
        assert len(result.attn_ms[n]) == len(result.mlp_ms[n]) == 2
        assert all(t > 0 for t in result.attn_ms[n] + result.mlp_ms[n])
        attn, mlp = result.shares(n)
        assert attn + mlp == pytest.approx(1.0)
        # the two parts are inside the whole forward
        assert sum(result.attn_ms[n]) + sum(result.mlp_ms[n]) < result.prefill_ms[n]
    assert set(result.dump()["shares"]) == {"16", "64"}


def test_recommendation_reads_the_longest_length():
    shares = {"128": {"attn": 0.1, "mlp": 0.9}, "1024": {"attn": 0.7, "mlp": 0.3}}
    assert recommend(shares, 0.25) == {"heads": True, "mlp": True}
    assert recommend(shares, 0.5) == {"heads": True, "mlp": False}


def test_the_profile_stage_times_the_model_in_the_stages_dtype(tmp_path):
    """What serving runs is the runtime's precision on its device: the profile loads the model
    there (bf16 here), not as the fp32 CPU copy it was saved as."""
    from recslm.config import ProfileConfig, RuntimeConfig
    from recslm.models.factory import save_model
    from recslm.prune.gradual import profile_student
    from recslm.runtime import pinned_runtime

    tokenizer = tiny_tokenizer()
    save_model(tiny_model(tokenizer), tokenizer, tmp_path / "model")
    cfg = ProfileConfig(context_lengths=[16], repeats=1)
    with pinned_runtime(RuntimeConfig(dtype="bf16", device="cpu"), seed=0):
        metrics = profile_student(tmp_path / "model", tmp_path / "out", cfg)
    assert metrics["dtype"] == "bfloat16" and metrics["device"] == "cpu"
    with pinned_runtime(RuntimeConfig(device="cpu"), seed=0):
        assert profile_student(tmp_path / "model", tmp_path / "out32", cfg)["dtype"] == "float32"
