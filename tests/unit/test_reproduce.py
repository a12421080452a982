"""The reproduction's statistics and verdicts on synthetic arm results (no verdict is written down)."""

from __future__ import annotations

import numpy as np
import pytest

from recslm.reproduce.findings import finding, paired_interval, verdict
from recslm.reproduce.study import arms, findings
from recslm.reproduce.study_config import StudyConfig


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
    study = _study(seeds=[0, 1, 2], prune_ratios=[0.5, 0.875], rows=["kd_vs_sft", "loss_choice", "prune_ratio", "size"])
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


def test_the_retraining_rows_prune_alike_and_retrain_at_equal_steps():
    """redistill_loss, gradual, kv_prune: each arm varies one thing; the verdicts come from the values."""
    from recslm.config import load_config

    study = _study(seeds=[0, 1, 2], rows=["redistill_loss", "gradual", "kv_prune"], redistill_ratio=0.5, redistill_steps=40, kv_fraction=0.5)
    planned = arms(study)
    assert set(planned) == {"prune-kd", "prune-sft", "gradual", "kv"}
    configs = {arm: load_config("configs/smoke.yaml", overrides) for arm, overrides in planned.items()}
    kd, sft, gradual, kv = (configs[a].prune for a in ("prune-kd", "prune-sft", "gradual", "kv"))
    assert (kd.redistill.loss, sft.redistill.loss, gradual.redistill.loss) == ("forward_kl", "sft", "forward_kl")
    assert kd.schedule == sft.schedule and [s.mlp_fraction for s in kd.schedule] == [0.5]
    assert [s.mlp_fraction for s in gradual.schedule] == [0.25, 0.5]
    # equal total re-training steps: one step of 40, or two of 20
    assert kd.redistill.max_steps * len(kd.schedule) == gradual.redistill.max_steps * len(gradual.schedule) == 40
    assert [(s.mlp_fraction, s.heads_fraction) for s in kv.schedule] == [(0.0, 0.5)] and kv.redistill.max_steps == 40
    assert all(c.students[0].name == "s" for c in configs.values())
    line = {"auc_mean": 0.7, "params": 100, "params_non_embedding": 50, "bytes": 400}

    def run(pruned: float, student: float = 0.72) -> dict:
        return {"s": {**line, "auc_mean": student}, "s-pruned": {**line, "auc_mean": pruned}}

    models = {
        "prune-kd": [run(0.70 + d) for d in (0.0, 0.001, -0.001)],
        "prune-sft": [run(0.69 + d) for d in (0.0, 0.001, -0.0012)],  # KD 0.01 above SFT: holds
        "gradual": [run(0.70 + d) for d in (0.002, -0.003, 0.001)],  # level with one-shot: no signal
        "kv": [run(0.718 + d) for d in (0.0, 0.0005, -0.0005)],  # 0.002 below unpruned, margin 0.01: holds
    }
    stages = {"kv": [{"prune": {"prefill_ratio": {"64": 0.9, "1024": 0.8}}}, {"prune": {"prefill_ratio": {"64": 0.9, "1024": 0.8}}},
                     {"prune": {"prefill_ratio": {"64": 0.9, "1024": 0.8}}}]}  # fmt: skip
    rows = {f.row: f for f in findings(study, models, stages=stages)}
    assert rows["redistill_loss"].verdict == "holds" and rows["redistill_loss"].effect == pytest.approx(0.01, abs=1e-4)
    assert "unpruned 0.7200" in rows["redistill_loss"].note
    assert rows["gradual"].verdict == "no signal at this scale"
    assert rows["kv_prune"].verdict == "holds" and "1024 tokens 1.25x as fast" in rows["kv_prune"].note
    with pytest.raises(ValueError, match="must be even"):
        _study(redistill_steps=41)


def test_the_scarce_label_arms_share_the_labeled_subset_and_their_verdicts_come_from_the_values():
    from recslm.config import load_config

    study = _study(seeds=[0, 1, 2], rows=["scarce_labels"], label_fraction=0.25)
    planned = arms(study)
    assert set(planned) == {"labels", "labels-kd-all"}
    labels, kd_all = (load_config("configs/smoke.yaml", planned[a]).distill for a in ("labels", "labels-kd-all"))
    assert labels.label_fraction == kd_all.label_fraction == 0.25
    assert (labels.unlabeled, labels.sft_baseline, kd_all.unlabeled) == ("drop", True, "kd")
    line = {"auc_mean": 0.7, "params": 100, "params_non_embedding": 50, "bytes": 400}

    def run(student: float, sft: float = 0.68, teacher: float = 0.72) -> dict:
        return {"s": {**line, "auc_mean": student}, "s-sft": {**line, "auc_mean": sft}, "teacher": {**line, "auc_mean": teacher}}

    models = {
        "labels": [run(0.70 + d, sft=0.68 + d) for d in (0.0, 0.002, -0.001)],  # KD + CE 0.02 above SFT
        "labels-kd-all": [run(0.70 + d) for d in (0.003, -0.002, 0.0)],  # level with KD on the subset
    }
    rows = findings(study, models)
    assert [f.verdict for f in rows] == ["holds", "holds", "no signal at this scale"]
    assert rows[0].effect == pytest.approx(0.02) and "the teacher is +0.0397 above SFT on 25%" in rows[0].note


def test_the_calibration_arms_differ_in_their_calibration_set_alone():
    from recslm.config import load_config

    study = _study(seeds=[0, 1, 2], rows=["calibration"], redistill_ratio=0.5, calibration_counts=[64, 256], calibration_text_counts=[256, 1024])
    planned = arms(study)
    assert set(planned) == {"calib-records-64", "calib-records-256", "calib-text-256", "calib-text-1024"}
    configs = {a: load_config("configs/smoke.yaml", o).prune for a, o in planned.items()}
    assert {(c.calibration.source, c.calibration.count) for c in configs.values()} == {("records", 64), ("records", 256), ("text", 256), ("text", 1024)}
    assert all(c.redistill is None and [s.mlp_fraction for s in c.schedule] == [0.5] for c in configs.values())  # one-shot, before re-training
    line = {"auc_mean": 0.7, "params": 100, "params_non_embedding": 50, "bytes": 400}
    auc = {"calib-records-64": 0.69, "calib-records-256": 0.70, "calib-text-256": 0.66, "calib-text-1024": 0.70}
    models = {a: [{"s": line, "s-pruned": {**line, "auc_mean": v + d}} for d in (0.0, 0.001, -0.0012)] for a, v in auc.items()}
    stages = {a: [{"prune": {"steps": [{"totals": {"mlp_relative_error_mean": 0.1}}]}}] * 3 for a in auc}
    rows = findings(study, models, stages=stages)
    assert [r.verdict for r in rows] == ["holds", "holds", "no signal at this scale"]  # text 1024 level with in-domain 256
    assert [r.effect for r in rows] == pytest.approx([0.04, 0.01, 0.0], abs=1e-6)
    assert "in-domain 64 1.00e-01" in rows[0].note
    with pytest.raises(ValueError, match="distinct positive"):
        _study(calibration_counts=[64, 64])


def test_the_quantization_arms_quantize_the_same_student_in_each_group_size():
    from recslm.config import load_config

    study = _study(seeds=[0, 1, 2], rows=["quantization"], quant_group_sizes=[32, 64], quant_margin=0.002)
    planned = arms(study)
    assert set(planned) == {"quant-g32", "quant-g64"}
    configs = {a: load_config("configs/smoke.yaml", o).quantize for a, o in planned.items()}
    assert [c.group_size for c in configs.values()] == [32, 64] and all(c.enabled and len(c.schemes) == 4 for c in configs.values())
    line = {"auc_mean": 0.7, "params": 100, "params_non_embedding": 50, "bytes": 400}
    auc = {"s": 0.70, "s-fp8_dynamic": 0.7001, "s-w8a8_int": 0.6995, "s-w4a16_gptq": 0.69, "s-w4a16_quantease": 0.695}
    models = {a: [{n: {**line, "auc_mean": v + d} for n, v in auc.items()} for d in (0.0, 0.001, -0.0012)] for a in planned}
    rows = findings(study, models)
    assert [r.b for r in rows] == ["FP8", "W8A8-INT", "W4A16 GPTQ g32", "W4A16 QuantEase g32", "W4A16 GPTQ g64", "W4A16 QuantEase g64"]
    assert [r.verdict for r in rows] == ["holds"] * 6
    assert rows[2].effect == pytest.approx(-0.01) and rows[3].effect == pytest.approx(0.005)


def test_the_serving_findings_read_each_seeds_latencies():
    from recslm.reproduce.serving import KS, serving_findings

    def seed(jitter: float) -> dict[str, float]:
        out = {}
        for model, scale in (("student", 1.0), ("pruned", 0.8)):
            for k in KS:
                out[f"{model}/nocache/k{k}"] = scale * (4.0 + 0.1 * k) + jitter  # prefill 4 ms, 0.1 ms per candidate
                out[f"{model}/cache/k{k}"] = scale * (1.0 + 0.1 * k) + jitter
        return out

    rows = serving_findings([seed(0.0), seed(0.05), seed(-0.03)], members=5)
    assert [r.verdict for r in rows] == ["holds"] * 4
    assert rows[0].effect == pytest.approx(5.6 - 16 * 4.1 - 15 * 0.02 / 3)  # one prefill instead of 16 (the jitter counts 16 times in a)
    assert rows[2].effect == pytest.approx(-3.0) and rows[3].effect == pytest.approx(-0.2 * 5.6)
    assert "median member latency over 5 test members" in rows[0].note and rows[0].metric == "member latency ms"
    slower = serving_findings([{**seed(d), "pruned/nocache/k16": 9.0 + d} for d in (0.0, 0.1, -0.1)], members=5)
    assert slower[3].verdict == "does not hold"  # a pruned model that got slower is reported as such


def test_the_serving_arm_prunes_the_most_even_without_the_pruning_rows():
    study = _study(rows=["serving"], prune_ratios=[0.5, 0.75])
    assert list(arms(study)) == ["kd"] and "prune.schedule=[{mlp_fraction: 0.75}]" in arms(study)["kd"]


def test_a_study_config_names_the_bad_field(tmp_path):
    from recslm.errors import ConfigError
    from recslm.reproduce.study_config import load_study

    bad = tmp_path / "study.yaml"
    bad.write_text("base: configs/smoke.yaml\nstudent: {name: s, arch: {family: llama}}\nseeds: [0]\n")
    with pytest.raises(ConfigError, match="seeds"):
        load_study(bad)
    bad.write_text("base: nowhere.yaml\nstudent: {name: s, arch: {family: llama}}\n")
    with pytest.raises(ConfigError, match="base: nowhere.yaml"):
        load_study(bad)


# --------------------------------------------------------------------------- the generative rows (Table 1)

GEN_ROWS = ["gen_kd_vs_sft", "gen_losses", "gen_schedules", "gen_sampling", "gen_teacher_size"]
TINY = {"family": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 96}


def _gen_study(**changes):
    generative = {"base": "configs/smoke-generative.yaml", "student": {"name": "g", "arch": TINY},
                  "teachers": [{"name": "small", "arch": TINY}], "on_policy_fraction": 1.0, **changes.pop("generative", {})}  # fmt: skip
    return _study(rows=GEN_ROWS, generative=generative, **changes)


def _gen_base(study):
    from flows.reproduce import GENERATIVE_ARM_BASE
    from recslm.config import load_config

    return load_config(study.generative.base, [*study.generative.set, *GENERATIVE_ARM_BASE])


def test_the_generative_arms_vary_one_thing_each_at_equal_total_steps():
    from recslm.config import load_config
    from recslm.reproduce.generative import generative_arms

    study = _gen_study()
    base = _gen_base(study)
    planned = generative_arms(study.generative, study.generative_rows(), base)
    assert set(planned) == {"gen-fkl", "gen-rkl", "gen-jsd", "gen-recipe", "gen-ofkl", "gen-sft-ofkl", "gen-temperature", "gen-length",
                            "gen-fraction", "gen-teacher-small"}  # fmt: skip
    assert arms(study) == {}  # no ranking row: no ranking arm
    recipe = base.distill.phases
    total = sum(p.train.max_steps for p in recipe)

    def config(arm):
        from flows.reproduce import GENERATIVE_ARM_BASE

        return load_config(study.generative.base, [*GENERATIVE_ARM_BASE, *planned[arm]])

    for arm, (loss, fraction) in {"gen-fkl": ("forward_kl", 0.0), "gen-rkl": ("reverse_kl", 0.0), "gen-jsd": ("jsd", 0.0),
                                  "gen-ofkl": ("forward_kl", recipe[1].on_policy_fraction)}.items():  # fmt: skip
        (phase,) = config(arm).distill.phases
        assert (phase.loss, phase.on_policy_fraction, phase.train.max_steps) == (loss, fraction, total), arm
        assert phase.train.learning_rate == recipe[0].train.learning_rate
    assert config("gen-fkl").distill.sft_baseline and not config("gen-rkl").distill.sft_baseline
    assert [p.loss for p in config("gen-sft-ofkl").distill.phases] == ["sft", "forward_kl"]
    assert config("gen-recipe").distill.phases == recipe and [s.name for s in config("gen-recipe").students] == ["g"]
    assert config("gen-temperature").distill.sampling.temperature == 0.8 and config("gen-temperature").distill.phases == recipe
    assert config("gen-fraction").distill.phases[1].on_policy_fraction == 1.0 != recipe[1].on_policy_fraction
    assert config("gen-teacher-small").teacher.arch.hidden_size == 32 != base.teacher.arch.hidden_size


def test_every_generative_row_reads_its_arms_and_computes_its_verdicts():
    from recslm.reproduce.generative import generative_findings

    study = _gen_study()
    line = {"loss": 3.0}

    def run(student: float, sft: float = 3.0, teacher: float = 2.9) -> dict:
        return {"g": {**line, "loss": student}, "g-sft": {**line, "loss": sft}, "teacher": {**line, "loss": teacher}}

    noise = (0.0, 0.002, -0.002)
    models = {
        "gen-fkl": [run(2.9 + d) for d in noise],  # 0.1 below its SFT twin: KD holds
        "gen-rkl": [run(2.95 + d) for d in noise],  # above FKL: "RKL does not beat FKL" holds
        "gen-jsd": [run(2.9 + d) for d in (0.003, -0.001, -0.002)],  # equal: no signal
        "gen-recipe": [run(2.85 + d) for d in noise],  # two stages below both one-phase arms; below the teacher's 2.9
        "gen-ofkl": [run(2.88 + d) for d in noise],
        "gen-sft-ofkl": [run(2.85 + d) for d in (0.002, -0.003, 0.001)],
        "gen-temperature": [run(2.80 + d) for d in noise],
        "gen-length": [run(2.85 + d) for d in (0.001, -0.002, 0.001)],
        "gen-fraction": [run(2.90 + d) for d in noise],
        "gen-teacher-small": [run(2.95 + d, teacher=3.1) for d in noise],
    }
    stages = {"gen-recipe": [{"distill.g": {"sampling_share": 0.2}}] * 3, "gen-ofkl": [{"distill.g": {"sampling_share": 0.6}}] * 3}
    rows = {(f.row, f.b, f.a): f for f in generative_findings(study.generative, GEN_ROWS, models, stages)}
    assert {f.metric for f in rows.values()} == {"test loss"}
    assert rows[("gen_kd_vs_sft", "FKL", "SFT")].verdict == "holds" and rows[("gen_kd_vs_sft", "FKL", "SFT")].effect == pytest.approx(-0.1)
    assert rows[("gen_losses", "RKL", "FKL")].verdict == "holds"
    assert rows[("gen_losses", "JSD", "FKL")].verdict == "no signal at this scale"
    two = rows[("gen_schedules", "FKL -> oFKL", "FKL")]
    assert two.verdict == "holds" and "FKL -> oFKL 20%" in two.note and "oFKL alone 60%" in two.note
    assert rows[("gen_schedules", "FKL -> oFKL", "oFKL")].verdict == "holds"
    assert rows[("gen_schedules", "FKL -> oFKL", "SFT -> oFKL")].verdict == "no signal at this scale"
    assert rows[("gen_sampling", "temperature 0.8", "recipe")].verdict == "holds"  # "changes the result": either side
    assert rows[("gen_sampling", "on-policy 1", "recipe")].verdict == "holds"
    assert rows[("gen_sampling", "128 new tokens", "recipe")].verdict == "no signal at this scale"
    small = rows[("gen_teacher_size", "small teacher", "base teacher")]
    assert small.verdict == "does not hold" and "small 3.1000" in small.note  # its student ends 0.1 above the base teacher's
    assert rows[("gen_teacher_size", "student (recipe)", "teacher")].verdict == "holds"  # 2.85 < the teacher's 2.9


@pytest.mark.parametrize(
    ("low", "high", "margin", "verdict_"),
    [(0.01, 0.02, None, "holds"), (-0.02, -0.01, None, "holds"), (-0.01, 0.02, None, "no signal at this scale"),
     (-0.001, 0.001, 0.005, "does not hold")],
)  # fmt: skip
def test_a_change_that_matters_either_way(low, high, margin, verdict_):
    from recslm.reproduce.findings import Interval

    assert verdict(Interval(effect=(low + high) / 2, low=low, high=high, n=3, sd=0.0), "different", margin) == verdict_


def test_generative_rows_refuse_what_would_measure_nothing(tmp_path):
    from recslm.errors import ConfigError
    from recslm.reproduce.generative import generative_arms
    from recslm.reproduce.study_config import study_with_rows

    with pytest.raises(ValueError, match="need a generative: section"):
        _study(rows=["kd_vs_sft", "gen_losses"])
    study = _gen_study(generative={"on_policy_fraction": 0.5})  # the smoke-generative recipe's own fraction
    with pytest.raises(ConfigError, match=r"on_policy_fraction \(0.5\) equal the base's"):
        generative_arms(study.generative, study.generative_rows(), _gen_base(study))
    ranking = _gen_study(generative={"base": "configs/smoke.yaml"})
    with pytest.raises(ConfigError, match="is a ranking config"):
        generative_arms(ranking.generative, ranking.generative_rows(), _gen_base(ranking))
    with pytest.raises(ConfigError, match="gen_teacher_size row needs"):
        bare = _gen_study(generative={"teachers": []})
        generative_arms(bare.generative, ["gen_teacher_size"], _gen_base(bare))
    with pytest.raises(ConfigError, match=r"study.yaml \(--rows\)"):
        study_with_rows(_study(), ["gen_nope"], "study.yaml")
    assert study_with_rows(study, ["gen_losses"], "study.yaml").rows == ["gen_losses"]


def test_the_report_prints_tiny_effects_and_plots_each_metric_on_its_own_scale(tmp_path):
    """A pruning row's 6e-6 AUC must not print as +0.0000, and an AUC difference must not be
    drawn on the axis of a latency in ms (the figure would show every AUC row at zero)."""
    from PIL import Image

    from recslm.reproduce.report import by_metric, findings_table, signed, write_report

    tiny = finding("prune_ratio", "lowers AUC", "paper", "test auc_mean", "a", "b", {"a": [0.75, 0.74, 0.73], "b": [0.75 - 6e-6, 0.74 - 5e-6, 0.73 - 7e-6]}, "negative")
    ms = finding("serving", "is faster", "paper", "member latency ms", "a", "b", {"a": [80.0, 70.0, 100.0], "b": [10.0, 12.0, 11.0]}, "negative")
    auc = finding("kd_vs_sft", "beats", "paper", "test auc_mean", "a", "b", {"a": [0.70, 0.72, 0.71], "b": [0.75, 0.74, 0.76]}, "positive")
    assert signed(tiny.effect) == "-6.00e-06" and signed(0.0405) == "+0.0405" and signed(0.0) == "+0.0000"
    assert "| -6.00e-06 |" in findings_table([tiny])
    shared = [ms.model_copy(update={"note": "latencies"}), ms.model_copy(update={"note": "latencies"})]
    assert findings_table(shared).count("- serving: latencies") == 1
    assert {metric: [f.row for f in group] for metric, group in by_metric([tiny, ms, auc]).items()} == {
        "test auc_mean": ["prune_ratio", "kd_vs_sft"], "member latency ms": ["serving"]}
    paths = write_report([tiny, ms, auc], tmp_path, {"study": "t"})
    with Image.open(paths["figure"]) as image:
        assert image.size[0] > 0 and image.size[1] > 0
