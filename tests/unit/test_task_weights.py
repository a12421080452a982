"""teacher.task_weights: a task's weight scales its share of the teacher's answer-token loss
(more weight on *next*, where the demo teacher trails logistic regression: README, Figures)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from recslm.config import ArchSpec, PipelineConfig
from recslm.data.tokenizer import answer_token_ids
from recslm.errors import ConfigError
from recslm.models.factory import build_model
from recslm.models.prefix import answer_logits_shared, make_groups
from recslm.train.sft import AnswerTokenTrainer, answer_targets, task_weight_vector


def _loss(model, tokenizer, groups, weights):
    trainer = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), answer_ids=answer_token_ids(tokenizer),
                              pad_id=tokenizer.pad_token_id, task_weights=weights, ranking_loss={})  # fmt: skip
    return AnswerTokenTrainer.compute_loss(trainer, model, {"items": groups})


def test_the_weighted_loss_is_the_weighted_mean_of_per_candidate_losses(records, tokenizer, one_thread):
    model = build_model(ArchSpec(hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64), tokenizer, 0)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(200)  # an untrained model's losses are all ~log(vocab): spread them
    groups = make_groups(records, tokenizer)
    assert {g.task for g in groups} == {"like", "next"}
    with torch.no_grad():
        logits = answer_logits_shared(model, groups, tokenizer.pad_token_id)
        per = torch.nn.functional.cross_entropy(logits, answer_targets(groups, answer_token_ids(tokenizer), logits.device), reduction="none")
        is_next = torch.tensor([g.task == "next" for g in groups for _ in g.labels])
        assert abs(per[is_next].mean() - per[~is_next].mean()) > 0.01  # so that a weight shows
        plain, weighted = _loss(model, tokenizer, groups, {}), _loss(model, tokenizer, groups, {"next": 3.0})
        assert plain == pytest.approx(per.mean().item(), rel=1e-5)
        expected = (per[~is_next].sum() + 3 * per[is_next].sum()) / ((~is_next).sum() + 3 * is_next.sum())
        assert weighted == pytest.approx(expected.item(), rel=1e-5) and weighted != pytest.approx(plain.item(), rel=1e-4)
        # all tasks weighted alike is the plain mean again
        assert _loss(model, tokenizer, groups, {"next": 2.0, "like": 2.0}) == pytest.approx(plain.item(), rel=1e-5)
    vector = task_weight_vector(groups, {"next": 3.0}, torch.device("cpu"))
    assert vector.shape == is_next.shape and set(vector[is_next].tolist()) == {3.0} and set(vector[~is_next].tolist()) == {1.0}


# the two per-task weight maps of the teacher's loss (task_weights here, ranking_loss in
# test_ranking_loss.py) share their checks: the field named in each error, the key that holds
PER_TASK_FIELDS = [("task_weights", "task weights", 3.0), ("ranking_loss", "ranking-loss weights", 1.0)]


@pytest.mark.parametrize(("field", "what", "weight"), PER_TASK_FIELDS)
def test_per_task_weights_name_the_field_when_wrong(field, what, weight):
    from recslm.config import load_config

    with pytest.raises(ConfigError, match=rf"teacher.{field}: \['nxt'\] not among data.tasks"):
        load_config("configs/smoke.yaml", [f"teacher.{field}={{nxt: 2}}"])
    with pytest.raises(ConfigError, match=f"{what} must be positive"):
        load_config("configs/smoke.yaml", [f"teacher.{field}={{next: 0}}"])
    with pytest.raises(ConfigError, match=f"teacher.{field}: ranking tasks only"):
        load_config("configs/smoke-generative.yaml", [f"teacher.{field}={{next: 2}}"])


@pytest.mark.parametrize(("field", "what", "weight"), PER_TASK_FIELDS)
def test_the_teacher_key_holds_without_per_task_weights_and_moves_with_them(field, what, weight):
    from recslm.config import load_config
    from recslm.stages.teacher import key

    base = load_config("configs/smoke.yaml")
    assert field not in key(base)["teacher"]  # existing stores keep their teachers
    weighted = load_config("configs/smoke.yaml", [f"teacher.{field}={{next: {weight}}}"])
    assert key(weighted)["teacher"][field] == {"next": weight} and key(weighted) != key(base)
    assert getattr(PipelineConfig.model_validate(base.model_dump()).teacher, field) == {}
