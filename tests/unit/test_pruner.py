"""A whole pruning step: sequential calibration, per-layer choice, masking, slicing, records."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from recslm.data.calibration import calibration_inputs
from recslm.errors import ConfigError
from recslm.models.factory import count_parameters, save_model
from recslm.prune.calibration import pad_batch
from recslm.prune.pruner import Solver, prune_step
from tests.helpers import synthetic_records, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    records = synthetic_records(members=16, k=4)
    tok = tiny_tokenizer(records)
    return tok, calibration_inputs(records, tok, count=32)


def _logits(model, inputs):
    ids, mask = pad_batch(inputs, pad_id=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits, mask


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_one_step_prunes_both_parts_and_saves_a_plain_model(setup, family, tmp_path):
    tok, inputs = setup
    model = tiny_model(tok, family, seed=3)
    before = count_parameters(model)
    seen = []
    result = prune_step(model, inputs, mlp_keep=32, kv_keep=1, solver=Solver("osscar"), on_layer=seen.append)
    assert model.config.intermediate_size == 32 and model.config.num_key_value_heads == 1 and model.config.num_attention_heads == 2
    assert result.params_before == before and result.params_after == count_parameters(model) < before
    assert [(r.layer, r.part) for r in result.records] == [(0, "attn"), (0, "mlp"), (1, "attn"), (1, "mlp")]
    assert seen == result.records
    for r in result.records:
        assert r.error_local is not None and r.error_local <= r.error_greedy * (1 + 1e-9)
        assert 0.0 <= r.relative_error <= 1.0
    save_model(model, tok, tmp_path / "pruned")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    got, mask = _logits(loaded, inputs)
    want, _ = _logits(model.eval(), inputs)
    assert torch.allclose(got[mask.bool()], want[mask.bool()], atol=1e-5)
    assert result.totals()["mlp_error"] == pytest.approx(sum(r.error for r in result.records if r.part == "mlp"))


def test_osscar_reconstructs_better_than_magnitude(setup):
    """On the same model and data, OSSCAR's summed layer error is below the magnitude baseline's."""
    tok, inputs = setup
    errors = {}
    for method in ("osscar", "magnitude"):
        model = tiny_model(tok, "llama", seed=4)
        errors[method] = prune_step(model, inputs, mlp_keep=24, kv_keep=None, solver=Solver(method)).totals()["mlp_error"]
    assert errors["osscar"] < errors["magnitude"]


def test_refit_off_keeps_original_weights_of_kept_neurons(setup):
    tok, inputs = setup
    model = tiny_model(tok, "llama", seed=5)
    original = [layer.mlp.down_proj.weight.detach().clone() for layer in model.model.layers]
    result = prune_step(model, inputs, mlp_keep=40, kv_keep=None, solver=Solver("wanda", refit=False))
    for layer, w0 in zip(model.model.layers, original):
        w = layer.mlp.down_proj.weight
        # every kept column is one of the original columns, unchanged
        assert all(any(torch.equal(w[:, j], w0[:, i]) for i in range(w0.shape[1])) for j in range(w.shape[1]))
    assert all(r.error_greedy is None for r in result.records)


def test_bad_targets_are_errors_before_any_change(setup):
    tok, inputs = setup
    model = tiny_model(tok, "llama", seed=6)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="nothing to prune"):
        prune_step(model, inputs, mlp_keep=None, kv_keep=None, solver=Solver())
    with pytest.raises(ConfigError, match="keep 3 KV groups in layer 0, which has 2"):
        prune_step(model, inputs, mlp_keep=None, kv_keep=3, solver=Solver())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
