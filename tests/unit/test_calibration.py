"""Calibration prompts and layer statistics: H = XᵀX over real tokens only, early stop, sequential use."""

from __future__ import annotations

import pytest
import torch

from recslm.data.calibration import calibration_inputs, text_calibration_inputs
from recslm.data.records import RankingRecord
from recslm.data.tokenizer import encode_candidate, encode_prefix
from recslm.errors import ConfigError, DataError
from recslm.prune.calibration import LayerStats, collect_layer_stats, pad_batch
from tests.helpers import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


@pytest.fixture(scope="module")
def prompts(records, tokenizer):
    return calibration_inputs(records, tokenizer, count=10)


def double_model(tokenizer, family="llama"):
    """float64 weights, so padded and unpadded forwards agree to ~1e-15 and 1e-9 checks are meaningful."""
    return tiny_model(tokenizer, family).to(torch.float64).eval()


def reference_stats(model, prompts, layer):
    """X captured by the test's own hooks: each prompt alone (no padding at all), full forward."""
    block = model.get_decoder().layers[layer]
    captured = {"mlp": [], "attn": []}
    handles = [
        block.mlp.down_proj.register_forward_pre_hook(lambda m, a: captured["mlp"].append(a[0][0].clone())),
        block.self_attn.o_proj.register_forward_pre_hook(lambda m, a: captured["attn"].append(a[0][0].clone())),
    ]
    try:
        with torch.no_grad():
            for p in prompts:
                model(input_ids=p[None])
    finally:
        for h in handles:
            h.remove()
    return {part: torch.cat(rows).to(torch.float64) for part, rows in captured.items()}


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= rel * scale, f"max diff {(a - b).abs().max().item():.3e} vs scale {scale:.3e}"


def no_hooks(model) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


# --- layer statistics ------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_gram_is_xtx_over_real_tokens(family, tokenizer, prompts):
    """Padded batches of unequal lengths give XᵀX of the unpadded activations, as batch_size=1 does;
    the reference runs the whole model, so stopping after the layer changes nothing."""
    assert len({p.numel() for p in prompts}) > 3  # unequal lengths: padding is exercised
    model = double_model(tokenizer, family)
    for layer in (0, 1):
        x = reference_stats(model, prompts, layer)
        padded = collect_layer_stats(model, prompts, layer, batch_size=4)
        single = collect_layer_stats(model, prompts, layer, batch_size=1)
        assert set(padded) == {"mlp", "attn"}
        for part in ("mlp", "attn"):
            want = x[part].T @ x[part]
            for stats in (padded[part], single[part]):
                assert stats.gram.dtype == torch.float64 and stats.gram.shape == want.shape
                assert stats.tokens == sum(p.numel() for p in prompts) == x[part].shape[0]
                assert_close(stats.gram, want, 1e-9)
                assert_close(stats.sum, x[part].sum(0), 1e-9)
                assert_close(stats.variance(), x[part].var(0, unbiased=False), 1e-9)


def test_float32_padding_matches_batch_size_one(tokenizer, prompts):
    """At the usual float32 the padded path differs from batch_size=1 only by float32 rounding."""
    model = tiny_model(tokenizer).eval()
    padded = collect_layer_stats(model, prompts, 1, batch_size=8)
    single = collect_layer_stats(model, prompts, 1, batch_size=1)
    for part in ("mlp", "attn"):
        assert padded[part].tokens == single[part].tokens
        assert_close(padded[part].gram, single[part].gram, 1e-5)


def test_mean_and_variance_from_sums():
    torch.manual_seed(0)
    x = torch.randn(37, 5, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0]) + torch.tensor([0.0, 5.0, -1.0, 2.0, 10.0])
    x[:, 4] = 10.0  # a constant column has variance 0, not a tiny negative number
    stats = LayerStats.zeros(5)
    stats.add(x[:20])
    stats.add(x[20:])
    assert stats.tokens == 37
    assert torch.allclose(stats.sum, x.sum(0), rtol=1e-12)
    assert torch.allclose(stats.gram, x.T @ x, rtol=1e-12)
    assert torch.allclose(stats.mean(), x.mean(0), rtol=1e-12)
    assert torch.allclose(stats.variance(), x.var(0, unbiased=False), rtol=1e-9, atol=1e-12)
    assert stats.variance()[4] >= 0.0
    with pytest.raises(DataError, match="zero tokens"):
        LayerStats.zeros(3).mean()


def test_forward_stops_after_the_layer_and_hooks_are_removed(tokenizer, prompts):
    model = tiny_model(tokenizer)
    model.train()
    calls = {"layer1": 0, "head": 0}
    model.get_decoder().layers[1].register_forward_pre_hook(lambda m, a: calls.__setitem__("layer1", calls["layer1"] + 1))
    model.get_output_embeddings().register_forward_pre_hook(lambda m, a: calls.__setitem__("head", calls["head"] + 1))
    collect_layer_stats(model, prompts, 0, batch_size=4)
    assert calls == {"layer1": 0, "head": 0}
    assert model.training  # the caller's mode is restored
    for m in model.modules():
        m._forward_pre_hooks.clear()
    collect_layer_stats(model, prompts, 1, batch_size=4)
    assert no_hooks(model)


def test_hooks_removed_when_the_forward_fails(tokenizer, prompts):
    model = tiny_model(tokenizer).eval()
    bad = [prompts[0], torch.tensor([model.config.vocab_size + 5])]  # out-of-vocabulary id
    with pytest.raises(IndexError):
        collect_layer_stats(model, bad, 1)
    assert no_hooks(model)


def test_sequential_calibration_sees_the_pruned_layer(tokenizer, prompts):
    """Masking layer 0 in place changes layer 1's statistics (nothing is cached) and leaves the
    statistics upstream of the change (layer 0's attention output) alone."""
    model = double_model(tokenizer)
    before0 = collect_layer_stats(model, prompts, 0)
    before1 = collect_layer_stats(model, prompts, 1)
    with torch.no_grad():
        model.get_decoder().layers[0].mlp.down_proj.weight[:, ::2] = 0.0  # prune half the neurons
    after0 = collect_layer_stats(model, prompts, 0)
    after1 = collect_layer_stats(model, prompts, 1)
    assert torch.equal(after0["attn"].gram, before0["attn"].gram)
    for part in ("mlp", "attn"):
        assert (after1[part].gram - before1[part].gram).abs().max() > 1e-3 * before1[part].gram.abs().max()
        x = reference_stats(model, prompts, 1)[part]
        assert_close(after1[part].gram, x.T @ x, 1e-9)


def test_mixture_of_experts_mlp_is_refused_but_attention_works(tokenizer, prompts):
    model = tiny_model(tokenizer, "mixtral").eval()
    with pytest.raises(ConfigError, match="mlp.down_proj"):
        collect_layer_stats(model, prompts, 0)
    stats = collect_layer_stats(model, prompts, 0, parts=("attn",))
    assert set(stats) == {"attn"} and stats["attn"].tokens == sum(p.numel() for p in prompts)
    assert no_hooks(model)


def test_bad_arguments(tokenizer, prompts):
    model = tiny_model(tokenizer)
    with pytest.raises(ConfigError, match="out of range"):
        collect_layer_stats(model, prompts, 2)
    with pytest.raises(ConfigError, match="parts"):
        collect_layer_stats(model, prompts, 0, parts=("ffn",))
    with pytest.raises(ConfigError, match="batch_size"):
        collect_layer_stats(model, prompts, 0, batch_size=0)
    with pytest.raises(DataError, match="no prompts"):
        collect_layer_stats(model, [], 0)
    with pytest.raises(DataError, match="prompt 1"):
        collect_layer_stats(model, [prompts[0], torch.tensor([], dtype=torch.long)], 0)
    assert no_hooks(model)


# --- calibration prompts ---------------------------------------------------------------------


def test_calibration_inputs_are_scored_prompts(records, tokenizer):
    got = calibration_inputs(records, tokenizer, count=20, seed=3)
    assert len(got) == 20
    all_prompts = {tuple(encode_prefix(tokenizer, r.prefix) + encode_candidate(tokenizer, r.candidate)) for r in records}
    for p in got:
        assert p.dtype == torch.long and p.dim() == 1
        assert tuple(p.tolist()) in all_prompts


def test_calibration_inputs_are_reproducible(records, tokenizer):
    def as_lists(ps):
        return [p.tolist() for p in ps]

    a = calibration_inputs(records, tokenizer, count=15, seed=1)
    assert as_lists(a) == as_lists(calibration_inputs(records, tokenizer, count=15, seed=1))
    assert as_lists(a) != as_lists(calibration_inputs(records, tokenizer, count=15, seed=2))
    # a larger count extends the same pick order
    assert as_lists(calibration_inputs(records, tokenizer, count=30, seed=1))[:15] == as_lists(a)


def test_calibration_inputs_spread_over_prompt_groups(tokenizer):
    """One candidate per group before a second from any: shared prefixes would repeat rows of X."""
    recs = [
        RankingRecord(member_id=str(m), task="like", prefix=f"Member {m} history {'x' * m}\n", candidate=f"Movie {c}\nAnswer:", label=c % 2)
        for m in range(5)
        for c in range(4)
    ]
    prefixes = {tuple(encode_prefix(tokenizer, r.prefix)) for r in recs}
    for seed in range(3):
        got = calibration_inputs(recs, tokenizer, count=5, seed=seed)
        used = {next(pre for pre in prefixes if tuple(p[: len(pre)].tolist()) == pre) for p in got}
        assert len(used) == 5


def test_calibration_inputs_truncate_keeping_the_start(records, tokenizer):
    full = calibration_inputs(records, tokenizer, count=10, seed=0)
    cut = calibration_inputs(records, tokenizer, count=10, max_tokens=12, seed=0)
    assert max(p.numel() for p in full) > 12
    for f, c in zip(full, cut, strict=True):
        assert c.numel() == min(12, f.numel())
        assert torch.equal(c, f[: c.numel()])


def test_calibration_inputs_count_errors(records, tokenizer):
    with pytest.raises(DataError, match=f"only {len(records)} records"):
        calibration_inputs(records, tokenizer, count=len(records) + 1)
    assert len(calibration_inputs(records, tokenizer, count=len(records))) == len(records)
    with pytest.raises(ConfigError, match="count"):
        calibration_inputs(records, tokenizer, count=0)
    with pytest.raises(ConfigError, match="max_tokens"):
        calibration_inputs(records, tokenizer, count=1, max_tokens=0)


def test_text_calibration_inputs(tokenizer):
    texts = [f"Film {i} is a drama about the year {1950 + i}." for i in range(8)] + ["", "   \n"]
    got = text_calibration_inputs(texts, tokenizer, count=8, max_tokens=6, seed=0)
    assert len(got) == 8 and all(1 <= p.numel() <= 6 for p in got)
    encoded = {tuple(tokenizer.encode(t, add_special_tokens=True)[:6]) for t in texts[:8]}
    assert {tuple(p.tolist()) for p in got} == encoded  # every non-blank text once, blanks skipped
    again = text_calibration_inputs(texts, tokenizer, count=8, max_tokens=6, seed=0)
    assert [p.tolist() for p in again] == [p.tolist() for p in got]
    with pytest.raises(DataError, match="only 8 of 10 texts"):
        text_calibration_inputs(texts, tokenizer, count=9)


def test_pad_batch_right_pads_with_a_mask():
    ids, mask = pad_batch([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
