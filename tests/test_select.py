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
