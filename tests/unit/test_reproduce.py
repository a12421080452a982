"""The reproduction's statistics and verdicts on synthetic arm results (no verdict is written down)."""

from __future__ import annotations

import numpy as np
import pytest

from recslm.reproduce.findings import finding, paired_interval, verdict
from recslm.reproduce.study import StudyConfig, arms, findings


def _arms(effect: float, noise: float, seeds: int = 5, seed: int = 0) -> dict[str, list[float]]:
    """Arm b = arm a + effect, each seed with its own shared offset (what pairing removes) and noise."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.75, 0.05, seeds)  # seed-to-seed spread common to both arms
    return {"a": list(shared), "b": list(shared + effect + rng.normal(0, noise, seeds))}


def test_a_known_effect_is_found_and_its_interval_covers_it():
    values = _arms(0.02, 0.002)
    found = finding("r", "b beats a", "paper", "auc", "a", "b", values, "positive")
    assert found.verdict == "holds" and found.ci95[0] < 0.02 < found.ci95[1] and found.effect == pytest.approx(0.02, abs=0.004)
    assert finding("r", "b is below a", "paper", "auc", "a", "b", values, "negative").verdict == "does not hold"


def test_no_effect_gives_no_signal():
    values = _arms(0.0, 0.01)
    assert finding("r", "b beats a", "paper", "auc", "a", "b", values, "positive").verdict == "no signal at this scale"


def test_pairing_removes_the_shared_seed_spread():
    """The seed-to-seed spread is several times the effect; paired differences still find it."""
    values = _arms(0.002, 0.0002)
    assert np.std(values["a"]) > 5 * 0.002
    assert finding("r", "b beats a", "paper", "auc", "a", "b", values, "positive").verdict == "holds"


def test_the_interval_is_student_t_over_seeds():
    interval = paired_interval([0.0, 0.0, 0.0], [0.01, 0.02, 0.03])
    # mean 0.02, sd 0.01, t(0.975, 2) = 4.303: half-width 0.02484
    assert interval.effect == pytest.approx(0.02) and interval.high - interval.effect == pytest.approx(4.3027 * 0.01 / 3**0.5, rel=1e-3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_interval([0.1], [0.2])


@pytest.mark.parametrize(
    ("low", "high", "verdict_"),
    [(-0.004, 0.004, "holds"), (0.02, 0.03, "does not hold"), (-0.003, 0.02, "no signal at this scale")],
)
def test_equivalence_within_a_margin(low, high, verdict_):
    from recslm.reproduce.findings import Interval

    assert verdict(Interval(effect=(low + high) / 2, low=low, high=high, n=3, sd=0.0), "equivalent", 0.01) == verdict_


def _study(**changes) -> StudyConfig:
    return StudyConfig.model_validate({"base": "configs/smoke.yaml", "student": {"name": "s", "arch": {"family": "llama", "hidden_size": 32, "num_layers": 1,
                                       "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128}}, **changes})  # fmt: skip


def test_every_row_reads_its_arms_and_computes_its_verdicts():
    study = _study(seeds=[0, 1, 2], prune_ratios=[0.5, 0.875])
    planned = arms(study)
    assert set(planned) == {"kd", "rkl", "jsd", "no-prompt-kd", "prune-50"}  # the largest ratio rides on the KD arm
    assert "prune.schedule=[{mlp_fraction: 0.875}]" in planned["kd"] and "distill.sft_baseline=true" in planned["kd"]
    line = {"auc_mean": 0.7, "params": 100, "params_non_embedding": 50, "bytes": 400}

    def run(student: float, sft: float = 0.7, pruned: float = 0.7, teacher: float = 0.72) -> dict:
        return {"s": {**line, "auc_mean": student}, "s-sft": {**line, "auc_mean": sft}, "teacher": {**line, "auc_mean": teacher, "params": 1000},
                "s-pruned": {**line, "auc_mean": pruned, "params": 60}}  # fmt: skip

    models = {
        "rkl": [run(0.71 + d) for d in (0.002, -0.002, 0.0)],  # equal to KD: no signal
        "jsd": [run(0.70 + d) for d in (0.0, 0.001, -0.001)],  # 0.01 below KD: holds (does not beat FKL)
        "no-prompt-kd": [run(0.71 + d) for d in (0.003, -0.001, -0.001)],
        "prune-50": [run(0.71, pruned=0.705 + d) for d in (0.0, 0.0005, -0.0005)],
        "kd": [run(0.71 + d, pruned=0.65 + d) for d in (0.0, 0.001, -0.001)],  # KD +0.01 over SFT; 87.5 % pruned -0.06
    }
    rows = {(f.row, f.b): f for f in findings(study, models)}
    assert rows[("kd_vs_sft", "KD (recipe)")].verdict == "holds"
    assert rows[("loss_choice", "reverse KL")].verdict == "no signal at this scale"
    assert rows[("loss_choice", "JSD")].verdict == "holds"
    assert rows[("prune_ratio", "87.5% MLP pruned")].verdict == "holds" and rows[("prune_ratio", "87.5% MLP pruned")].effect == pytest.approx(-0.06)
    size = rows[("size", "final")]
    assert size.verdict == "does not hold" and "16.7x" in size.note  # 0.06 below the teacher's 0.72, margin 0.01; 1000 -> 60 parameters


def test_a_study_config_names_the_bad_field(tmp_path):
    from recslm.errors import ConfigError
    from recslm.reproduce.study import load_study

    bad = tmp_path / "study.yaml"
    bad.write_text("base: configs/smoke.yaml\nstudent: {name: s, arch: {family: llama}}\nseeds: [0]\n")
    with pytest.raises(ConfigError, match="seeds"):
        load_study(bad)
    bad.write_text("base: nowhere.yaml\nstudent: {name: s, arch: {family: llama}}\n")
    with pytest.raises(ConfigError, match="base: nowhere.yaml"):
        load_study(bad)
