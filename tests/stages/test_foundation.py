"""The teacher's foundation phase: causal-LM pre-training on the training groups' text."""

from __future__ import annotations

import pytest
import torch

from recslm.config import FoundationConfig, TrainConfig
from recslm.data.records import answer_text
from recslm.train.foundation import group_texts, pack_blocks, pretrain
from tests.helpers import synthetic_records, tiny_model, tiny_tokenizer


def _lm_loss(model, blocks):
    with torch.inference_mode():
        ids = torch.stack(blocks)
        return float(model(input_ids=ids, labels=ids).loss)


def test_texts_are_whole_groups_with_their_answers_packed_without_padding():
    records = synthetic_records(members=3)
    texts = group_texts(records)
    assert len(texts) == 6  # 3 members x 2 tasks
    first = [r for r in records if (r.member_id, r.task) == (records[0].member_id, records[0].task)]
    assert texts[0] == first[0].prefix + "\n".join(r.candidate + answer_text(r.label) for r in first)
    tokenizer = tiny_tokenizer(records)
    blocks = pack_blocks(texts, tokenizer, 32)
    assert blocks and all(b.shape == (32,) for b in blocks)
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    assert len(blocks) == total // 32


@pytest.mark.parametrize("family", ["mixtral", "llama"])
def test_pretraining_lowers_the_lm_loss_and_a_retry_reuses_the_finished_phase(family, tmp_path):
    records = synthetic_records(members=30, seed=1)
    tokenizer = tiny_tokenizer(records)
    model = tiny_model(tokenizer, family)
    cfg = FoundationConfig(train=TrainConfig(epochs=4, learning_rate=5e-3, groups_per_batch=4, save_steps=1000, logging_steps=5), block_size=64)
    blocks = pack_blocks(group_texts(records), tokenizer, 64)
    before = _lm_loss(model, blocks)
    logs: list[dict] = []
    metrics = pretrain(model, tokenizer, records, cfg, tmp_path / "foundation", seed=0, on_log=lambda s, v: logs.append(v))
    assert metrics["foundation_blocks"] == len(blocks) and metrics["foundation_steps"] > 0
    model.config.output_router_logits = False
    after = _lm_loss(model, blocks)
    assert after < 0.7 * before
    if family == "mixtral":  # the router's load-balancing loss was part of the objective, and is off again
        assert model.config.router_aux_loss_coef == cfg.router_aux_loss_coef and not model.config.output_router_logits
    # the stage retried later: the finished phase is loaded back, not trained again
    fresh = tiny_model(tokenizer, family, seed=1)
    again = pretrain(fresh, tokenizer, records, cfg, tmp_path / "foundation", seed=0)
    assert again["foundation_reused"] and again["foundation_steps"] == metrics["foundation_steps"]
    for (name, ours), theirs in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(ours, theirs), name
