"""Prefix-shared scoring equals naive per-prompt scoring; AUC on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recslm.evaluate.metrics import auc_per_task, delta_pct, mean_auc
from recslm.evaluate.scoring import score_records
from recslm.models.prefix import make_groups
from tests.helpers import tiny_model


def per_prompt_scores(model, tokenizer, records) -> np.ndarray:
    """The reference: each prompt alone, full forward, softmax over the two answers."""
    yes, no = tokenizer.encode(" yes"), tokenizer.encode(" no")
    out = []
    with torch.no_grad():
        for r in records:
            ids = tokenizer.encode(r.prefix) + tokenizer.encode(r.candidate, add_special_tokens=False)
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            out.append(torch.softmax(logits[[yes[0], no[0]]], -1)[0].item())
    return np.array(out)


@pytest.mark.parametrize("family, groups_per_batch", [("llama", 1), ("qwen2", 3), ("qwen3", 8), ("mixtral", 64)])
def test_prefix_shared_equals_per_prompt(family, groups_per_batch, records, tokenizer):
    """Batches mix prefixes of different lengths, so the padding mask path is exercised too."""
    model = tiny_model(tokenizer, family).eval()
    shared = score_records(model, tokenizer, records, prefix_sharing=True, groups_per_batch=groups_per_batch)
    naive = score_records(model, tokenizer, records, prefix_sharing=False, groups_per_batch=groups_per_batch)
    reference = per_prompt_scores(model, tokenizer, records)
    assert np.abs(shared.scores - reference).max() < 1e-4
    assert np.abs(naive.scores - reference).max() < 1e-4
    assert shared.loss == pytest.approx(naive.loss, abs=1e-4)
    # the shared path really computes fewer tokens
    assert shared.tokens_computed < naive.tokens_computed
    # scores are not degenerate (the test would pass trivially on constant scores)
    assert reference.std() > 1e-4


def test_groups_share_prefix_tokens(records, tokenizer):
    groups = make_groups(records, tokenizer)
    assert len(groups) == len({(r.member_id, r.task) for r in records})
    for g in groups:
        for index, cand in zip(g.record_index, g.candidate_ids):
            r = records[index]
            assert g.prefix_ids + cand == tokenizer.encode(r.prefix) + tokenizer.encode(r.candidate, add_special_tokens=False)
            # the concatenation is what the tokenizer gives for the whole prompt
            assert g.prefix_ids + cand == tokenizer.encode(r.prefix + r.candidate)


def test_auc_known_cases():
    tasks = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    labels = [0, 0, 1, 1, 1, 0, 1, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.9, 0.1, 0.8, 0.2, 0.3, 0.4]
    auc = auc_per_task(tasks, labels, scores)
    assert auc == {"a": pytest.approx(0.75), "b": pytest.approx(1.0)}  # c has one class: no AUC
    assert mean_auc(auc) == pytest.approx(0.875)
    assert delta_pct(0.7, 0.8) == pytest.approx(-12.5)
    with pytest.raises(ValueError, match="undefined"):
        mean_auc({})
