"""Gradual pruning schedules: bookkeeping of cumulative targets, and bad settings."""

from __future__ import annotations

import pytest

from recslm.config import PipelineConfig, PruneConfig, load_config
from recslm.errors import ConfigError
from recslm.prune.gradual import targets_for
from recslm.prune.schedule import StepKeeps, plan, step_keeps


def test_explicit_schedule_keeps_counts_against_the_original_widths():
    cfg = PruneConfig(enabled=True, schedule=[{"mlp_fraction": 0.1875}, {"mlp_fraction": 0.375}, {"mlp_fraction": 0.375, "heads_fraction": 0.5}])
    steps = plan(cfg)
    assert [step_keeps(steps, i, 128, 4, 1) for i in range(3)] == [StepKeeps(104, None), StepKeeps(80, None), StepKeeps(None, 2)]


def test_equal_steps_from_the_fractions_and_alignment():
    steps = plan(PruneConfig(enabled=True, mlp_fraction=0.5, heads_fraction=0.5, steps=2))
    assert [(s.mlp_fraction, s.heads_fraction) for s in steps] == [(0.25, 0.25), (0.5, 0.5)]
    assert step_keeps(steps, 0, 512, 8, 128) == StepKeeps(384, 6)
    assert step_keeps(steps, 1, 512, 8, 128) == StepKeeps(256, 4)


def test_targets_that_go_down_or_prune_nothing_are_errors():
    with pytest.raises(ConfigError, match=r"prune.schedule\[1\]: targets are cumulative"):
        plan(PruneConfig(enabled=True, schedule=[{"mlp_fraction": 0.5}, {"mlp_fraction": 0.25}]))
    with pytest.raises(ConfigError, match="nothing to prune"):
        plan(PruneConfig(enabled=True))
    with pytest.raises(ConfigError, match="nothing to prune"):
        plan(PruneConfig(enabled=True, schedule=[{"mlp_fraction": 0.0}]))


def test_width_not_a_multiple_of_align_names_the_step():
    steps = plan(PruneConfig(enabled=True, mlp_fraction=0.5))
    with pytest.raises(ConfigError, match="prune step 0 mlp_fraction: 100 groups are not a multiple of align=128"):
        step_keeps(steps, 0, 100, 4, 128)


def test_fraction_of_one_is_refused_by_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prune:\n  schedule:\n    - {mlp_fraction: 1.0}\n")
    with pytest.raises(ConfigError, match=r"prune\.schedule\.0\.mlp_fraction"):
        load_config(path, [])


def test_pruning_needs_students():
    with pytest.raises(Exception, match="prune.enabled: pruning acts on the selected student"):
        PipelineConfig.model_validate({"prune": {"enabled": True, "mlp_fraction": 0.5}})


def test_auto_parts_follow_the_profile():
    cfg = PruneConfig(enabled=True, parts="auto", schedule=[{"mlp_fraction": 0.25, "heads_fraction": 0.5}])
    only_heads = targets_for(cfg, {"heads": True, "mlp": False})
    assert [(s.mlp_fraction, s.heads_fraction) for s in only_heads.schedule] == [(0.0, 0.5)]
    assert targets_for(cfg.model_copy(update={"parts": "config"}), {"heads": True, "mlp": False}) == cfg.model_copy(update={"parts": "config"})
    with pytest.raises(ConfigError, match="lower it"):
        targets_for(cfg, {"heads": False, "mlp": False})
