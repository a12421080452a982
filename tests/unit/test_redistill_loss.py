"""prune.redistill.loss: after each pruning step the student is re-trained with a divergence to
the unpruned student (forward KL, the default) or with cross-entropy alone (sft): the paper's
KD vs SFT after pruning (its Table 2), row 4 of `recslm reproduce`."""

from __future__ import annotations

import pytest
import torch

from recslm.config import ArchSpec, load_config
from recslm.errors import ConfigError

SMOKE = "configs/smoke.yaml"


def test_the_prune_key_holds_at_the_default_and_moves_with_the_loss():
    from recslm.stages.prune import key

    base = load_config(SMOKE)
    assert base.prune.redistill.loss == "forward_kl"
    assert "loss" not in key(base, "tiny-llama")["prune"]["redistill"]  # prune artifacts stored before the setting still match
    explicit = load_config(SMOKE, ["prune.redistill.loss=forward_kl"])
    assert key(explicit, "tiny-llama") == key(base, "tiny-llama")
    sft = load_config(SMOKE, ["prune.redistill.loss=sft"])
    assert key(sft, "tiny-llama")["prune"]["redistill"]["loss"] == "sft" and key(sft, "tiny-llama") != key(base, "tiny-llama")
    assert "loss" not in sft.prune.redistill.train().model_dump()  # a distill phase gets the train settings alone


def test_an_unknown_loss_names_the_field():
    with pytest.raises(ConfigError, match=r"prune.redistill.loss"):
        load_config(SMOKE, ["prune.redistill.loss=kl"])


def _ops(tmp_path, loss: str):
    from recslm.data.build import tokenizer_path
    from recslm.prune.task_ops import RankingOps
    from tests.helpers import data_artifact
    from transformers import AutoTokenizer

    data = data_artifact(tmp_path, members=4)
    cfg = load_config(SMOKE, [f"prune.redistill={{max_steps: 3, eval_steps: 0, groups_per_batch: 2, loss: {loss}}}"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path(data))
    return RankingOps(data, tokenizer, cfg.prune, cfg.distill, cfg.evaluate, seed=0), tokenizer


@pytest.mark.parametrize("loss", ["sft", "forward_kl"])
def test_sft_retrains_on_the_labels_alone_and_kd_from_the_unpruned_model(tmp_path, loss, one_thread):
    """SFT needs no unpruned model (none is given) and logs no divergence; KD logs one."""
    from recslm.models.factory import build_model

    ops, tokenizer = _ops(tmp_path, loss)
    spec = ArchSpec(family="llama", hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=64)
    student = build_model(spec, tokenizer, 0)
    original = None if loss == "sft" else build_model(spec, tokenizer, 1)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    logged: list[dict] = []
    model, steps = ops.redistill(student, original, tmp_path / "redistill", seed=0, on_log=lambda step, values: logged.append(values), on_step=None)
    assert steps == 3
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it trained
    keys = {k for values in logged for k in values}
    assert any("loss_ce" in k for k in keys)
    assert any("loss_kd" in k for k in keys) == (loss == "forward_kl")
