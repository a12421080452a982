"""distill.label_fraction: students see the labels of a fixed share of the training groups; the
rest are dropped or trained by KD alone (`unlabeled: kd`): the setting of the paper's KD vs SFT
claim, where the teacher's knowledge stands in for missing labels (row 1 of `recslm reproduce`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recslm.config import DistillPhase, load_config
from recslm.errors import ConfigError
from recslm.models.prefix import make_groups
from recslm.train.distill import DistillItem, labeled_cross_entropy, labeled_groups, phase_items
from tests.helpers import synthetic_records

SMOKE = "configs/smoke.yaml"


@pytest.fixture(scope="module")
def groups(tokenizer):
    return make_groups(synthetic_records(members=80, k=4), tokenizer)


def test_the_labeled_subset_is_fixed_by_the_data_and_near_the_fraction(groups):
    chosen = labeled_groups(groups, 0.25)
    assert chosen == labeled_groups(groups, 0.25)  # no seed: every arm, seed and student alike
    assert 0.1 < sum(chosen) / len(groups) < 0.4
    # a group's fate does not depend on which other groups are there
    assert labeled_groups(groups[::-1], 0.25) == chosen[::-1]
    # a larger fraction keeps every group the smaller one labeled
    assert all(b for a, b in zip(chosen, labeled_groups(groups, 0.5)) if a)
    assert labeled_groups(groups, 1.0) == [True] * len(groups)


def test_cross_entropy_reads_only_the_labeled_groups(groups):
    items = [DistillItem(g, labeled=lab) for g, lab in zip(groups[:6], [True, False, True, False, False, True])]
    rows = sum(len(it.group.labels) for it in items)
    logits, targets = torch.randn(rows, 10, generator=torch.Generator().manual_seed(0)), torch.randint(0, 10, (rows,), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([it.labeled for it in items for _ in it.group.labels])
    assert labeled_cross_entropy(logits, targets, items) == pytest.approx(F.cross_entropy(logits[mask], targets[mask]).item(), rel=1e-6)
    unlabeled = [DistillItem(it.group, labeled=False) for it in items]
    labeled = [DistillItem(it.group) for it in items]
    assert labeled_cross_entropy(logits, targets, labeled) == pytest.approx(F.cross_entropy(logits, targets).item())
    none = labeled_cross_entropy(logits.clone().requires_grad_(), targets, unlabeled)
    assert none.item() == 0.0 and none.requires_grad  # a batch of unlabeled groups: no label term, the graph intact


def test_sft_and_drop_train_on_the_labeled_groups_kd_on_all(groups):
    items = [DistillItem(g, labeled=lab) for g, lab in zip(groups, labeled_groups(groups, 0.25))]
    labeled = [it for it in items if it.labeled]
    assert phase_items(items, DistillPhase(loss="sft"), "kd") == labeled
    assert phase_items(items, DistillPhase(loss="forward_kl"), "drop") == labeled
    assert phase_items(items, DistillPhase(loss="forward_kl"), "kd") == items


def test_keys_hold_with_every_label_and_move_with_the_fraction():
    from recslm.stages.distill import key

    base = load_config(SMOKE)
    assert "label_fraction" not in key(base, "tiny-llama", "student")["distill"]
    assert "label_fraction" not in key(base, "tiny-llama", "sft_baseline")
    scarce = load_config(SMOKE, ["distill.label_fraction=0.2"])
    assert key(scarce, "tiny-llama", "sft_baseline")["label_fraction"] == 0.2
    kd_all = load_config(SMOKE, ["distill.label_fraction=0.2", "distill.unlabeled=kd"])
    assert key(kd_all, "tiny-llama", "student") != key(scarce, "tiny-llama", "student")
    # the SFT twin never sees unlabeled groups: how KD treats them does not retrain it
    assert key(kd_all, "tiny-llama", "sft_baseline") == key(scarce, "tiny-llama", "sft_baseline")


def test_settings_that_would_measure_nothing_name_the_field():
    with pytest.raises(ConfigError, match="distill.unlabeled: kd .* label_fraction is 1"):
        load_config(SMOKE, ["distill.unlabeled=kd"])
    with pytest.raises(ConfigError, match="distill.label_fraction"):
        load_config(SMOKE, ["distill.label_fraction=0"])
    with pytest.raises(ConfigError, match="distill.label_fraction: ranking tasks only"):
        load_config("configs/smoke-generative.yaml", ["distill.label_fraction=0.5"])
