"""Pure decisions of the pipeline: which student to keep (and, later, whether to promote it).

No I/O and no framework imports, so the policy is tested directly and reads the same in
the flow, the CLI and a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from recslm.errors import RecslmError


class Candidate(BaseModel):
    """A trained model as the selection sees it."""

    name: str
    params: int
    auc_mean: float
    auc_delta_pct: float
    auc: dict[str, float] = {}


class Selection(BaseModel):
    """The chosen candidate (or none) and every candidate with its verdict, smallest first."""

    winner: str | None
    max_auc_drop_pct: float
    teacher_auc_mean: float
    rows: list[dict[str, object]]

    def table(self) -> str:
        """A plain-text table of all candidates (what a user sees when none qualifies)."""
        head = f"{'student':<24}{'params':>12}{'auc_mean':>10}{'delta %':>9}  verdict"
        lines = [head, "-" * len(head)]
        for row in self.rows:
            lines.append(
                f"{row['name']:<24}{row['params']:>12,}{row['auc_mean']:>10.4f}{row['auc_delta_pct']:>9.2f}  {row['verdict']}"
            )
        lines.append(f"teacher auc_mean {self.teacher_auc_mean:.4f}; bar: delta >= -{self.max_auc_drop_pct:g} %")
        return "\n".join(lines)


class NoQualifyingStudentError(RecslmError):
    """No student is within the quality bar; the message carries the table of all candidates."""

    def __init__(self, selection: Selection):
        self.selection = selection
        super().__init__(
            f"no student is within select.max_auc_drop_pct={selection.max_auc_drop_pct:g} % of the teacher; "
            "raise the bar, train longer or try larger students:\n" + selection.table()
        )


def select_smallest(candidates: Sequence[Candidate], teacher_auc_mean: float, max_auc_drop_pct: float) -> Selection:
    """The smallest candidate whose mean-AUC drop vs the teacher is within the bar.

    A candidate qualifies when ``auc_delta_pct >= -max_auc_drop_pct`` (students better than
    the teacher qualify too). Ties in size go to the higher mean AUC, then the name, so the
    choice never depends on the order students were listed or finished in.
    """
    if not candidates:
        raise RecslmError("select: no students to choose from (the config's students list is empty)")
    ordered = sorted(candidates, key=lambda c: (c.params, -c.auc_mean, c.name))
    winner = next((c for c in ordered if c.auc_delta_pct >= -max_auc_drop_pct), None)
    rows = [
        {
            "name": c.name,
            "params": c.params,
            "auc_mean": c.auc_mean,
            "auc_delta_pct": c.auc_delta_pct,
            "verdict": "selected" if winner is not None and c.name == winner.name
            else ("qualifies" if c.auc_delta_pct >= -max_auc_drop_pct else "below bar"),
        }
        for c in ordered
    ]
    return Selection(winner=winner.name if winner else None, max_auc_drop_pct=max_auc_drop_pct, teacher_auc_mean=teacher_auc_mean, rows=rows)
