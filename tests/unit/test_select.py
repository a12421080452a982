"""The selection policy: the smallest student within the bar, or a clear error with the table."""

from __future__ import annotations

import pytest

from recslm.errors import RecslmError
from recslm.select import Candidate, NoQualifyingStudentError, select_smallest


def _c(name, params, delta, teacher=0.8):
    return Candidate(name=name, params=params, auc_mean=teacher * (1 + delta / 100), auc_delta_pct=delta)


def test_picks_the_smallest_student_within_the_bar():
    cands = [_c("big", 900, -0.1), _c("small", 100, -3.0), _c("mid", 400, -0.9), _c("mid2", 400, -0.5)]
    sel = select_smallest(cands, 0.8, max_auc_drop_pct=1.0)
    assert sel.winner == "mid2"  # 'small' is below the bar; of the two 400s the better one wins
    verdicts = {r["name"]: r["verdict"] for r in sel.rows}
    assert verdicts == {"small": "below bar", "mid2": "selected", "mid": "qualifies", "big": "qualifies"}
    assert [r["params"] for r in sel.rows] == sorted(r["params"] for r in sel.rows)


def test_a_student_better_than_the_teacher_qualifies_and_order_does_not_matter():
    cands = [_c("a", 300, 2.0), _c("b", 300, -0.2)]
    assert select_smallest(cands, 0.8, 0.5).winner == select_smallest(cands[::-1], 0.8, 0.5).winner == "a"


def test_no_qualifying_student_raises_with_the_table_of_all_candidates():
    cands = [_c("tiny", 50, -9.0), _c("small", 100, -4.0)]
    sel = select_smallest(cands, 0.8, 1.0)
    assert sel.winner is None
    with pytest.raises(NoQualifyingStudentError) as err:
        raise NoQualifyingStudentError(sel)
    text = str(err.value)
    assert "select.max_auc_drop_pct=1" in text and "tiny" in text and "small" in text and "below bar" in text
    assert isinstance(err.value, RecslmError)  # the CLI prints it without a traceback


def test_empty_candidate_list_is_an_error():
    with pytest.raises(RecslmError, match="students list is empty"):
        select_smallest([], 0.8, 1.0)


# ----------------------------------------------------------------------------- promotion policy

from recslm.select import RegistryEntry, decide_promotion  # noqa: E402


def _entry(version: str, auc: float = 0.75, delta: float = -0.5, params: int = 1000, size: int = 4000, ttft: float | None = None) -> RegistryEntry:
    return RegistryEntry(version=version, auc_mean=auc, auc_delta_pct=delta, params=params, bytes=size, ttft_p99_ms=ttft)


def _decide(candidate, champion, objective="bytes", tolerance=0.2, gain=0.0, bar=1.0):
    return decide_promotion(candidate, champion, max_auc_drop_pct=bar, objective=objective, quality_tolerance_pct=tolerance, min_gain_pct=gain)


def test_the_first_candidate_within_the_bar_becomes_champion():
    assert _decide(_entry("1"), None).verdict == "champion"


def test_a_candidate_below_the_quality_bar_never_becomes_champion_even_without_one():
    decision = _decide(_entry("1", delta=-1.5), None, bar=1.0)
    assert decision.verdict == "challenger" and "quality bar" in decision.reason


def test_smaller_at_equal_quality_beats_the_champion_larger_does_not():
    champion = _entry("1", auc=0.750, size=4000)
    assert _decide(_entry("2", auc=0.7490, size=3000), champion).verdict == "champion"  # -0.13 %: equal quality
    assert _decide(_entry("3", auc=0.7550, size=5000), champion).verdict == "challenger"  # better but bigger


def test_smaller_but_worse_than_the_tolerance_stays_challenger():
    decision = _decide(_entry("2", auc=0.7480, size=1000), _entry("1", auc=0.750, size=4000), tolerance=0.2)  # -0.27 %
    assert decision.verdict == "challenger" and "below the champion" in decision.reason


def test_the_gain_must_exceed_min_gain_pct():
    champion = _entry("1", size=4000)
    assert _decide(_entry("2", size=3900), champion, gain=5).verdict == "challenger"  # 2.5 % smaller
    assert _decide(_entry("3", size=3700), champion, gain=5).verdict == "champion"  # 7.5 % smaller


def test_an_exact_tie_on_the_objective_goes_to_the_higher_auc():
    champion = _entry("1", auc=0.750, size=4000)
    assert _decide(_entry("2", auc=0.751, size=4000), champion).verdict == "champion"
    assert _decide(_entry("3", auc=0.750, size=4000), champion).verdict == "challenger"


def test_auc_objective_needs_a_strictly_higher_mean_auc():
    champion = _entry("1", auc=0.750, size=10)
    assert _decide(_entry("2", auc=0.751, size=99999), champion, objective="auc_mean").verdict == "champion"
    assert _decide(_entry("3", auc=0.750, size=1), champion, objective="auc_mean").verdict == "challenger"


def test_latency_objective_without_a_measurement_cannot_promote():
    champion = _entry("1", ttft=20.0)
    assert _decide(_entry("2", ttft=None), champion, objective="ttft_p99_ms").verdict == "challenger"
    assert _decide(_entry("3", ttft=12.0), champion, objective="ttft_p99_ms").verdict == "champion"


def test_the_champion_re_registered_stays_champion():
    champion = _entry("4")
    assert _decide(_entry("4"), champion).verdict == "champion"


# ----------------------------------------------------------------------------- decided on val


def _eval(val: float, test: float, params: int):
    from recslm.store import ArtifactRef

    metrics = {"params": params, "auc_mean": test, "auc": {"like": test}, "val_auc_mean": val, "val_auc": {"like": val}}
    return ArtifactRef(uri="/nowhere", key="k", kind="evaluate", metrics=metrics)


def test_the_select_stage_decides_on_val_never_on_test(tmp_path):
    """Val and test disagree: the small student is within the bar on val only, so it must win;
    reading test (where it is far below) would pick the big one."""
    from types import SimpleNamespace

    from recslm.config import PipelineConfig
    from recslm.stages import select as select_stage

    config = PipelineConfig.model_validate({"select": {"max_auc_drop_pct": 2.0}})
    inputs = select_stage.inputs_for(_eval(0.80, 0.70, 1000), {"small": _eval(0.795, 0.60, 10), "big": _eval(0.70, 0.72, 100)})
    metrics = select_stage.body(config, SimpleNamespace(out=tmp_path), inputs)
    assert metrics["winner"] == "small"
    assert metrics["teacher_auc_mean"] == 0.80
    assert "val auc" in (tmp_path / "selection.txt").read_text()


def _line(name, role, val, test=0.7):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, role=role, val_auc_mean=val, auc_mean=test)


def test_the_teacher_gate_compares_val_against_the_best_baseline_and_sft_student():
    from recslm.select import TeacherGateError, teacher_gate

    models = [_line("teacher", "teacher", 0.75, 0.9), _line("logistic_regression", "baseline", 0.74), _line("popularity", "baseline", 0.6)]
    gate = teacher_gate(models)
    assert gate.passed and gate.best_baseline == "logistic_regression" and gate.best_sft is None
    gate = teacher_gate([*models, _line("s-sft", "sft_baseline", 0.76, 0.5)])
    assert not gate.passed and gate.best_sft == "s-sft"  # a better test AUC does not save the teacher
    text = str(TeacherGateError(gate))
    assert "require_teacher_gate" in text and "s-sft" in text and "logistic_regression" in text and "FAILS" in text
    assert not teacher_gate([_line("teacher", "teacher", 0.70), _line("gradient_boosting", "baseline", 0.71)]).passed


def test_the_gate_carries_the_interval_against_the_best_baseline_only():
    from recslm.select import teacher_gate

    models = [_line("teacher", "teacher", 0.75), _line("logistic_regression", "baseline", 0.74), _line("popularity", "baseline", 0.6)]
    interval = {"difference": 0.01, "low": -0.002, "high": 0.021, "level": 0.95, "draws": 1000, "members": 166}
    vs = {"logistic_regression": {"val": interval, "test": interval}, "popularity": {"val": {**interval, "difference": 0.15}}}
    gate = teacher_gate(models, vs)
    assert gate.vs_best_baseline == vs["logistic_regression"]
    assert "teacher - logistic_regression on test: +0.0100 [-0.0020, +0.0210]" in gate.table()
    assert teacher_gate(models).vs_best_baseline is None
