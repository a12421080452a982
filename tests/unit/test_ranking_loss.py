"""teacher.ranking_loss: a pairwise term inside each decision, on the answer margin, added to the
teacher's answer-token cross-entropy (the demo teacher orders one decision's *next* candidates
worse than the popularity its prompt prints: README, Figures). Its config checks and stage key
are tested with task_weights' in test_task_weights.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from recslm.config import ArchSpec
from recslm.data.tokenizer import answer_token_ids
from recslm.models.factory import build_model
from recslm.models.prefix import Group, answer_logits_shared, make_groups
from recslm.train.sft import AnswerTokenTrainer, answer_targets, pairwise_ranking_loss

YES, NO = 5, 3
ANSWER_IDS = {1: YES, 0: NO}


def _group(task: str, labels: list[int]) -> Group:
    return Group(member_id="m", task=task, prefix_ids=[1], candidate_ids=[[2]] * len(labels), labels=labels)


def _logits(margins: list[float]) -> torch.Tensor:
    """Rows over a 6-token vocabulary whose answer margin logit(yes) - logit(no) is ``margins``."""
    logits = torch.randn(len(margins), 6, generator=torch.Generator().manual_seed(0))
    logits[:, NO] = 0.0
    logits[:, YES] = torch.tensor(margins)
    return logits


def test_the_term_is_the_mean_pairwise_logistic_loss_per_group_over_the_batch():
    groups = [_group("next", [1, 0, 0]), _group("like", [1, 0]), _group("next", [0, 1, 1])]
    margins = [2.0, 0.5, -1.0, 0.3, 0.1, 1.0, 0.0, 3.0]
    logits = _logits(margins)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    first = (softplus(0.5 - 2.0) + softplus(-1.0 - 2.0)) / 2
    third = (softplus(1.0 - 0.0) + softplus(1.0 - 3.0)) / 2
    got = pairwise_ranking_loss(logits, groups, ANSWER_IDS, {"next": 2.0})
    assert got.item() == pytest.approx(2.0 * (first + third) / 3, rel=1e-6)  # like is unweighted: it adds nothing
    both = pairwise_ranking_loss(logits, groups, ANSWER_IDS, {"next": 2.0, "like": 1.0})
    assert both.item() == pytest.approx((2.0 * (first + third) + softplus(0.1 - 0.3)) / 3, rel=1e-6)


def test_the_term_grades_only_the_order_inside_a_group():
    groups = [_group("next", [1, 0, 0]), _group("next", [0, 0, 0])]  # the second holds one class: no pairs
    right, wrong = _logits([9.0, -9.0, -9.0, 5.0, 5.0, 5.0]), _logits([-9.0, 9.0, 9.0, 5.0, 5.0, 5.0])
    assert pairwise_ranking_loss(right, groups, ANSWER_IDS, {"next": 1.0}).item() < 1e-6
    assert pairwise_ranking_loss(wrong, groups, ANSWER_IDS, {"next": 1.0}).item() == pytest.approx(18.0 / 2, rel=1e-6)
    # shifting a whole group's margins (an offset between decisions) leaves the term unchanged
    shifted = _logits([9.0 + 4, -9.0 + 4, -9.0 + 4, 1.0, 1.0, 1.0])
    wrongish = _logits([1.0, 2.0, 0.0, 5.0, 5.0, 5.0])
    shifted_wrongish = _logits([11.0, 12.0, 10.0, 5.0, 5.0, 5.0])
    assert pairwise_ranking_loss(shifted, groups, ANSWER_IDS, {"next": 1.0}).item() < 1e-6
    a = pairwise_ranking_loss(wrongish, groups, ANSWER_IDS, {"next": 1.0}).item()
    assert a == pytest.approx(pairwise_ranking_loss(shifted_wrongish, groups, ANSWER_IDS, {"next": 1.0}).item(), rel=1e-6) and a > 0.1


def test_the_gradient_raises_positives_and_lowers_negatives():
    groups = [_group("next", [0, 1, 0])]
    logits = _logits([0.0, 0.0, 0.0]).requires_grad_(True)
    pairwise_ranking_loss(logits, groups, ANSWER_IDS, {"next": 1.0}).backward()
    grad = logits.grad
    assert grad[1, YES] < 0 < grad[0, YES] and grad[1, NO] > 0 > grad[0, NO]  # descent raises the positive's margin
    assert torch.all(grad[:, [0, 1, 2, 4]] == 0)  # only the two answer tokens carry the term


def test_the_trainer_adds_the_term_to_the_cross_entropy(records, tokenizer, one_thread):
    model = build_model(ArchSpec(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64), tokenizer, 0)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(200)
    groups = make_groups(records, tokenizer)
    ids = answer_token_ids(tokenizer)

    def loss(ranking):
        trainer = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), answer_ids=ids, pad_id=tokenizer.pad_token_id,
                                  task_weights={}, ranking_loss=ranking)  # fmt: skip
        return AnswerTokenTrainer.compute_loss(trainer, model, {"items": groups}).item()

    with torch.no_grad():
        logits = answer_logits_shared(model, groups, tokenizer.pad_token_id)
        ce = torch.nn.functional.cross_entropy(logits, answer_targets(groups, ids, logits.device)).item()
        term = pairwise_ranking_loss(logits, groups, ids, {"next": 1.5}).item()
        assert term > 1e-3
        assert loss({}) == pytest.approx(ce, rel=1e-5)
        assert loss({"next": 1.5}) == pytest.approx(ce + term, rel=1e-5)
