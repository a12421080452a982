"""Structured pruning surgery: the masked model (shapes unchanged) and the sliced model
(saved, then loaded by plain transformers) must compute the same logits."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

from recslm.config import ArchSpec
from recslm.errors import CheckpointError, ConfigError
from recslm.models.factory import build_model, count_parameters, save_model
from recslm.models.compat import output_cache, with_cache
from recslm.models.surgery import (
    decoder_layers,
    head_layout,
    mask_heads,
    mask_mlp,
    mlp_width,
    slice_heads,
    slice_mlp,
)
from tests.helpers import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster

HIDDEN, WIDTH = 32, 64
# MLP keep sets: 40 of 64 neurons, unsorted (refit columns follow this order), align 8 holds.
KEEP_MLP = {0: torch.randperm(WIDTH, generator=torch.Generator().manual_seed(1))[:40], 1: torch.randperm(WIDTH, generator=torch.Generator().manual_seed(2))[:40]}
# 4 query heads / 2 KV heads: keep one group, a different one per layer.
KEEP_KV = {0: torch.tensor([1]), 1: torch.tensor([0])}
# 8 query heads / 4 KV heads: keep two groups, given out of order.
KEEP_KV_WIDE = {0: torch.tensor([3, 1]), 1: torch.tensor([0, 2])}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Large random weights and biases (HF inits biases to zero and weights tiny, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "norm" in name else 0.2 * noise)
    return model.eval()


def _make(tokenizer, family: str, seed: int = 0):
    if family in ("llama", "qwen2", "mixtral"):
        model = tiny_model(tokenizer, family, seed)
    elif family == "qwen3":
        model = build_model(ArchSpec(family="qwen3", hidden_size=HIDDEN, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=WIDTH), tokenizer, seed)
    elif family == "qwen3_wide":  # head_dim 8 != hidden / heads = 4: the explicit head_dim must survive
        model = build_model(ArchSpec(family="qwen3", hidden_size=HIDDEN, num_layers=2, num_heads=8, num_kv_heads=4, head_dim=8, intermediate_size=WIDTH), tokenizer, seed)
    elif family == "llama_bias":  # biases on every projection, o_proj and down_proj included
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=WIDTH, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True, max_position_embeddings=128)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    elif family == "mistral":
        torch.manual_seed(seed)
        cfg = MistralConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=WIDTH, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    else:
        raise AssertionError(family)
    return _randomize(model, seed + 100)


def _ids(model, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


@torch.no_grad()
def _padded_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits of the real tokens with row 0 left-padded: with a mask, SDPA on CPU takes the
    repeat_kv path that reads num_key_value_groups (without one it uses enable_gqa)."""
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    return model(input_ids=ids, attention_mask=mask).logits[mask.bool()]


def _refits(model, keep_mlp, keep_kv, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    down = {i: 0.2 * torch.randn(HIDDEN, len(k), generator=g, dtype=torch.float64) for i, k in keep_mlp.items()} if keep_mlp else None
    o = None
    if keep_kv:
        cols = head_layout(model, 0).group_width
        o = {i: 0.2 * torch.randn(HIDDEN, len(k) * cols, generator=g, dtype=torch.float64) for i, k in keep_kv.items()}
    return down, o


def _prune(base, keep_mlp=None, keep_kv=None, down=None, o=None, align: int = 1):
    """(masked copy, sliced copy) of ``base`` for the same keep sets and refit weights."""
    masked, sliced = copy.deepcopy(base), copy.deepcopy(base)
    for i in keep_mlp or {}:
        mask_mlp(masked, i, keep_mlp[i], None if down is None else down[i])
    for i in keep_kv or {}:
        mask_heads(masked, i, keep_kv[i], None if o is None else o[i])
    if keep_mlp:
        slice_mlp(sliced, keep_mlp, down, align=align)
    if keep_kv:
        slice_heads(sliced, keep_kv, o)
    return masked, sliced


def _reload(model, tokenizer, folder):
    save_model(model, tokenizer, folder)
    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


CASES = [
    ("llama", "mlp"), ("llama", "heads"), ("llama", "both"),
    ("qwen2", "mlp"), ("qwen2", "heads"), ("qwen2", "both"),
    ("qwen3", "heads"), ("qwen3_wide", "both"), ("llama_bias", "both"), ("mistral", "heads"), ("mixtral", "heads"),
]


@pytest.mark.parametrize("family,what", CASES)
def test_sliced_and_reloaded_model_matches_the_masked_one(tokenizer, tmp_path, family, what):
    base = _make(tokenizer, family)
    keep_kv = KEEP_KV_WIDE if family == "qwen3_wide" else KEEP_KV
    keep_mlp = KEEP_MLP if what in ("mlp", "both") else None
    keep_kv = keep_kv if what in ("heads", "both") else None
    masked, sliced = _prune(base, keep_mlp, keep_kv, align=8)
    loaded = _reload(sliced, tokenizer, tmp_path / "pruned")

    ids = _ids(base)
    want = _logits(masked, ids)
    assert (want - _logits(base, ids)).abs().max() > 1e-2  # the pruning did change the model
    assert (_logits(sliced, ids) - want).abs().max() < 1e-5
    assert (_logits(loaded, ids) - want).abs().max() < 1e-5
    assert (_padded_logits(sliced, ids) - _padded_logits(masked, ids)).abs().max() < 1e-5
    assert type(loaded) is type(base)


@pytest.mark.parametrize("family,keep_kv", [("qwen2", KEEP_KV), ("qwen3_wide", KEEP_KV_WIDE)])
def test_refit_weights_are_used(tokenizer, tmp_path, family, keep_kv):
    base = _make(tokenizer, family, seed=3)
    down, o = _refits(base, KEEP_MLP, keep_kv)
    masked, sliced = _prune(base, KEEP_MLP, keep_kv, down, o)
    _, plain = _prune(base, KEEP_MLP, keep_kv)
    loaded = _reload(sliced, tokenizer, tmp_path / "refit")

    ids = _ids(base, seed=1)
    want = _logits(masked, ids)
    assert (_logits(loaded, ids) - want).abs().max() < 1e-5
    assert (_logits(plain, ids) - want).abs().max() > 1e-2
    # The refit of layer 0 sits in the sliced down_proj / o_proj (reordered with the sorted keep sets).
    order = torch.argsort(KEEP_MLP[0])
    torch.testing.assert_close(loaded.model.layers[0].mlp.down_proj.weight, down[0][:, order].float())
    o_cols = head_layout(base, 0).query_columns(torch.argsort(keep_kv[0]))
    torch.testing.assert_close(loaded.model.layers[0].self_attn.o_proj.weight, o[0][:, o_cols].float())


def test_mask_zeroes_exactly_the_pruned_structure(tokenizer):
    """Zeroed o_proj columns alone would silence a pruned head; q/k/v rows and biases are
    zeroed too so the masked parameters mirror the sliced model."""
    base = _make(tokenizer, "llama_bias")
    model = copy.deepcopy(base)
    keep_n, keep_g = KEEP_MLP[1], KEEP_KV[1]  # group 0 kept: heads 0-1, KV head 0
    mask_mlp(model, 1, keep_n)
    mask_heads(model, 1, keep_g)
    old, new = base.model.layers[1], model.model.layers[1]
    gone = torch.ones(WIDTH, dtype=torch.bool)
    gone[keep_n] = False
    for name in ("gate_proj", "up_proj"):
        lin, ref = getattr(new.mlp, name), getattr(old.mlp, name)
        assert lin.weight[gone].abs().sum() == 0 and lin.bias[gone].abs().sum() == 0
        assert torch.equal(lin.weight[~gone], ref.weight[~gone]) and torch.equal(lin.bias[~gone], ref.bias[~gone])
    assert new.mlp.down_proj.weight[:, gone].abs().sum() == 0
    assert torch.equal(new.mlp.down_proj.weight[:, ~gone], old.mlp.down_proj.weight[:, ~gone])
    assert torch.equal(new.mlp.down_proj.bias, old.mlp.down_proj.bias)  # output bias is not per neuron
    attn, ref = new.self_attn, old.self_attn
    assert attn.q_proj.weight[16:].abs().sum() == 0 and attn.q_proj.bias[16:].abs().sum() == 0
    assert torch.equal(attn.q_proj.weight[:16], ref.q_proj.weight[:16])
    for name in ("k_proj", "v_proj"):
        lin = getattr(attn, name)
        assert lin.weight[8:].abs().sum() == 0 and lin.bias[8:].abs().sum() == 0
        assert torch.equal(lin.weight[:8], getattr(ref, name).weight[:8])
    assert attn.o_proj.weight[:, 16:].abs().sum() == 0 and torch.equal(attn.o_proj.weight[:, :16], ref.o_proj.weight[:, :16])
    assert torch.equal(attn.o_proj.bias, ref.o_proj.bias)
    assert all(torch.equal(a, b) for a, b in zip(model.model.layers[0].parameters(), base.model.layers[0].parameters()))


def test_slicing_a_masked_model_keeps_what_the_mask_wrote(tokenizer):
    """Layer-by-layer pruning masks with refits as it goes, then slices once at the end."""
    model = _make(tokenizer, "llama", seed=4)
    down, o = _refits(model, KEEP_MLP, KEEP_KV, seed=9)
    for i in (0, 1):
        mask_mlp(model, i, KEEP_MLP[i], down[i])
        mask_heads(model, i, KEEP_KV[i], o[i])
    ids = _ids(model)
    want = _logits(model, ids)
    slice_mlp(model, KEEP_MLP)
    slice_heads(model, KEEP_KV)
    assert (_logits(model, ids) - want).abs().max() < 1e-5


def test_parameter_count_and_config_are_updated(tokenizer, tmp_path):
    base = _make(tokenizer, "qwen2")  # q/k/v have biases, o_proj and the MLP do not
    _, sliced = _prune(base, KEEP_MLP, KEEP_KV, align=8)
    head_dim, rep, pruned_neurons = 8, 2, WIDTH - 40
    per_layer = (
        3 * HIDDEN * pruned_neurons  # gate/up rows, down columns
        + (HIDDEN + 1) * rep * head_dim  # q_proj rows + bias of the pruned group's query heads
        + 2 * (HIDDEN + 1) * head_dim  # k_proj, v_proj rows + bias of the pruned KV head
        + HIDDEN * rep * head_dim  # o_proj columns
    )
    assert count_parameters(base) - count_parameters(sliced) == 2 * per_layer

    cfg = sliced.config
    assert (cfg.intermediate_size, cfg.num_key_value_heads, cfg.num_attention_heads, cfg.head_dim) == (40, 1, 2, 8)
    assert mlp_width(sliced, 1) == 40
    assert head_layout(sliced, 1).num_heads == 2
    for layer in decoder_layers(sliced):
        assert layer.self_attn.num_key_value_groups == 2 and layer.mlp.intermediate_size == 40
        assert layer.mlp.gate_proj.out_features == 40 and layer.mlp.down_proj.in_features == 40
        assert layer.self_attn.q_proj.bias.shape == (16,) and layer.self_attn.k_proj.bias.shape == (8,)

    save_model(sliced, tokenizer, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (saved["intermediate_size"], saved["num_key_value_heads"], saved["num_attention_heads"], saved["head_dim"]) == (40, 1, 2, 8)


def test_cached_decoding_works_after_slicing(tokenizer):
    """One-token decode steps take transformers' GQA packing path, which reads num_key_value_groups."""
    model = _make(tokenizer, "qwen3_wide")
    slice_heads(model, KEEP_KV_WIDE)
    slice_mlp(model, KEEP_MLP)
    ids = _ids(model)
    full = _logits(model, ids)[:, -1]
    with torch.no_grad():
        out = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], use_cache=True, **with_cache(model, output_cache(out))).logits[:, -1]
    assert (step - full).abs().max() < 1e-4


# ---------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def llama(tokenizer):
    return _make(tokenizer, "llama")


def _untouched(model, fn):
    """Run ``fn`` on a copy expecting ConfigError; the copy must be unchanged afterwards."""
    m = copy.deepcopy(model)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        fn(m)
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert m.config.intermediate_size == WIDTH and m.config.num_key_value_heads == 2
    return str(err.value)


def test_unequal_kept_counts_name_the_layer(llama):
    msg = _untouched(llama, lambda m: slice_mlp(m, {0: torch.arange(32), 1: torch.arange(30)}))
    assert "layer 1 keeps 30 neurons" in msg and "layer 0 keeps 32" in msg
    wide = copy.deepcopy(llama)
    msg = _untouched(wide, lambda m: slice_heads(m, {0: torch.tensor([0, 1]), 1: torch.tensor([1])}))
    assert "layer 1 keeps 1 KV group" in msg


def test_count_must_be_a_multiple_of_align(llama):
    msg = _untouched(llama, lambda m: slice_mlp(m, {0: torch.arange(36), 1: torch.arange(36)}, align=8))
    assert "36" in msg and "align=8" in msg
    msg = _untouched(llama, lambda m: slice_heads(m, KEEP_KV, align=2))
    assert "align=2" in msg


@pytest.mark.parametrize(
    "keep,needle",
    [
        (torch.tensor([0, 64]), "out of range 0..63: [64]"),
        (torch.tensor([-1, 3]), "out of range"),
        (torch.tensor([5, 2, 5]), "duplicated neuron indices: [5]"),
        (torch.tensor([], dtype=torch.long), "keeps zero neurons"),
        (torch.ones(64, dtype=torch.bool), "integer neuron indices"),
    ],
)
def test_bad_keep_indices(llama, keep, needle):
    msg = _untouched(llama, lambda m: slice_mlp(m, {0: keep, 1: keep}))
    assert needle in msg and "layer 0" in msg
    msg = _untouched(llama, lambda m: mask_mlp(m, 0, keep))
    assert needle in msg


def test_keeping_zero_kv_groups_or_bad_groups(llama):
    empty = torch.tensor([], dtype=torch.long)
    assert "keeps zero KV groups" in _untouched(llama, lambda m: slice_heads(m, {0: empty, 1: empty}))
    assert "keeps zero KV groups" in _untouched(llama, lambda m: mask_heads(m, 1, empty))
    assert "out of range 0..1: [2]" in _untouched(llama, lambda m: slice_heads(m, {0: torch.tensor([2]), 1: torch.tensor([0])}))


def test_missing_layers_and_bad_refit_shapes(llama):
    assert "no keep set for layers [1]" in _untouched(llama, lambda m: slice_mlp(m, {0: torch.arange(32)}))
    assert "unknown layer indices [5]" in _untouched(llama, lambda m: slice_heads(m, {**KEEP_KV, 5: torch.tensor([0])}))
    msg = _untouched(llama, lambda m: slice_mlp(m, {0: torch.arange(32), 1: torch.arange(32)}, {1: torch.zeros(HIDDEN, 31)}))
    assert "layer 1: down_weight must have shape [32, 32]" in msg
    msg = _untouched(llama, lambda m: mask_heads(m, 0, torch.tensor([0]), torch.zeros(HIDDEN, 8)))
    assert "o_weight must have shape [32, 16]" in msg
    assert "out of range" in _untouched(llama, lambda m: mask_mlp(m, 2, torch.arange(4)))


def test_moe_mlp_pruning_is_refused_but_its_heads_can_be_pruned(tokenizer):
    moe = _make(tokenizer, "mixtral")
    keep = {0: torch.arange(24), 1: torch.arange(24)}
    with pytest.raises(ConfigError, match="MLP pruning of mixture-of-experts models is not supported"):
        slice_mlp(moe, keep)
    with pytest.raises(ConfigError, match="mixture-of-experts"):
        mask_mlp(moe, 0, keep[0])
    slice_heads(moe, KEEP_KV)
    assert moe.config.num_key_value_heads == 1


def test_unsupported_model_is_a_clear_error():
    with pytest.raises(CheckpointError, match="model.model.layers"):
        decoder_layers(torch.nn.Linear(2, 2))
