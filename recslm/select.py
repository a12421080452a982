"""Pure decisions of the pipeline: which student to keep, and whether a registered model becomes champion.

No I/O and no framework imports, so the policy is tested directly and reads the same in
the flow, the CLI and a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from recslm.errors import RecslmError


class Candidate(BaseModel):
    """A trained model as the selection sees it: ``auc_mean``, ``auc_delta_pct`` and ``auc`` are
    on the validation split (the test split is reported, never decided on)."""

    name: str
    params: int
    auc_mean: float
    auc_delta_pct: float
    auc: dict[str, float] = {}


class Selection(BaseModel):
    """The chosen candidate (or none) and every candidate with its verdict, smallest first.
    ``metric`` says what decided: mean val AUC (ranking) or val loss (generative: the
    ``*_val_loss*`` fields are set, the AUC ones are None)."""

    winner: str | None
    max_auc_drop_pct: float | None
    teacher_auc_mean: float | None
    rows: list[dict[str, object]]
    metric: Literal["val_auc_mean", "val_loss"] = "val_auc_mean"
    teacher_val_loss: float | None = None
    max_val_loss_increase_pct: float | None = None

    def bar(self) -> str:
        """The quality bar as the config spells it."""
        if self.metric == "val_loss":
            return f"select.max_val_loss_increase_pct={self.max_val_loss_increase_pct:g} %"
        return f"select.max_auc_drop_pct={self.max_auc_drop_pct:g} %"

    def table(self) -> str:
        """A plain-text table of all candidates (what a user sees when none qualifies)."""
        if self.metric == "val_loss":
            head = f"{'student':<24}{'params':>12}{'val loss':>10}{'increase %':>12}  verdict"
            lines = [head, "-" * len(head)]
            lines += [f"{row['name']:<24}{row['params']:>12,}{row['val_loss']:>10.4f}{row['val_loss_increase_pct']:>12.2f}  {row['verdict']}" for row in self.rows]
            lines.append(f"teacher val loss {self.teacher_val_loss:.4f}; bar: increase <= {self.max_val_loss_increase_pct:g} % (decided on val)")
            return "\n".join(lines)
        head = f"{'student':<24}{'params':>12}{'val auc':>10}{'delta %':>9}  verdict"
        lines = [head, "-" * len(head)]
        for row in self.rows:
            lines.append(
                f"{row['name']:<24}{row['params']:>12,}{row['auc_mean']:>10.4f}{row['auc_delta_pct']:>9.2f}  {row['verdict']}"
            )
        lines.append(f"teacher val auc_mean {self.teacher_auc_mean:.4f}; bar: delta >= -{self.max_auc_drop_pct:g} % (decided on val)")
        return "\n".join(lines)


class NoQualifyingStudentError(RecslmError):
    """No student is within the quality bar; the message carries the table of all candidates."""

    def __init__(self, selection: Selection):
        self.selection = selection
        super().__init__(
            f"no student is within {selection.bar()} of the teacher; "
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


class LossCandidate(BaseModel):
    """A generative model as the selection sees it: its val loss (response-token cross-entropy)."""

    name: str
    params: int
    val_loss: float


def select_smallest_by_loss(candidates: Sequence[LossCandidate], teacher_val_loss: float, max_increase_pct: float) -> Selection:
    """The generative task's rule: the smallest candidate whose val loss is at most
    ``max_increase_pct`` % above the teacher's (lower is better; a student below the teacher
    qualifies). Ties in size go to the lower val loss, then the name."""
    if not candidates:
        raise RecslmError("select: no students to choose from (the config's students list is empty)")
    if teacher_val_loss <= 0:
        raise RecslmError(f"select: the teacher's val loss is {teacher_val_loss}; a relative increase needs a positive loss")

    def increase(c: LossCandidate) -> float:
        return (c.val_loss - teacher_val_loss) / teacher_val_loss * 100.0

    ordered = sorted(candidates, key=lambda c: (c.params, c.val_loss, c.name))
    winner = next((c for c in ordered if increase(c) <= max_increase_pct), None)
    rows = [
        {"name": c.name, "params": c.params, "val_loss": c.val_loss, "val_loss_increase_pct": increase(c),
         "verdict": "selected" if winner is not None and c.name == winner.name else ("qualifies" if increase(c) <= max_increase_pct else "below bar")}
        for c in ordered
    ]  # fmt: skip
    return Selection(winner=winner.name if winner else None, max_auc_drop_pct=None, teacher_auc_mean=None, rows=rows, metric="val_loss",
                     teacher_val_loss=teacher_val_loss, max_val_loss_increase_pct=max_increase_pct)  # fmt: skip


# ----------------------------------------------------------------------------- teacher gate


class TeacherGate(BaseModel):
    """Whether the teacher is worth distilling: its mean val AUC against the best non-LM baseline
    and the best SFT student evaluated so far (a missing side does not block)."""

    passed: bool
    teacher_val_auc_mean: float | None
    best_baseline: str | None = None
    best_baseline_val_auc_mean: float | None = None
    best_sft: str | None = None
    best_sft_val_auc_mean: float | None = None
    rows: list[dict[str, object]]
    # the teacher's mean AUC minus the best baseline's per split, with its member-bootstrap
    # interval (recslm.evaluate.bootstrap): how sure the verdict is, not what decides it
    vs_best_baseline: dict[str, dict[str, float]] | None = None
    metric: Literal["val_auc_mean", "val_loss"] = "val_auc_mean"  # generative task: val loss, lower is better
    teacher_val_loss: float | None = None
    best_sft_val_loss: float | None = None

    def table(self) -> str:
        if self.metric == "val_loss":
            head = f"{'model':<28}{'role':<14}{'val loss':>10}{'test loss':>11}"
            lines = [head, "-" * len(head)] + [f"{r['name']:<28}{r['role']:<14}{r['val_loss']:>10.4f}{r['loss']:>11.4f}" for r in self.rows]
            lines.append(f"teacher gate {'passes' if self.passed else 'FAILS'}: the teacher's val loss must be below the best SFT student's")
            return "\n".join(lines)
        head = f"{'model':<28}{'role':<14}{'val auc':>9}{'test auc':>10}"
        lines = [head, "-" * len(head)]
        for row in self.rows:
            lines.append(f"{row['name']:<28}{row['role']:<14}{row['val_auc_mean']:>9.4f}{row['auc_mean']:>10.4f}")
        for split, d in (self.vs_best_baseline or {}).items():
            lines.append(f"teacher - {self.best_baseline} on {split}: {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] ({d['level']:.0%} interval, {int(d['draws'])} draws over {int(d['members'])} members)")
        verdict = "passes" if self.passed else "FAILS"
        lines.append(f"teacher gate {verdict}: the teacher's val AUC must beat the best baseline's and the best SFT student's")
        return "\n".join(lines)


class TeacherGateError(RecslmError):
    """The teacher does not beat a baseline or an SFT student on val (``select.require_teacher_gate``)."""

    def __init__(self, gate: TeacherGate):
        self.gate = gate
        super().__init__(
            "the teacher is not worth distilling (select.require_teacher_gate is on): train a stronger teacher "
            "or turn the gate off to distill anyway:\n" + gate.table()
        )


def teacher_gate(models: Sequence[Any], vs_baselines: dict[str, dict[str, dict[str, float]]] | None = None) -> TeacherGate:
    """The gate on the models evaluated so far (summary lines with ``role``, ``name``, ``val_auc_mean``);
    ``vs_baselines`` (the teacher's evaluate metrics) adds the intervals against the best baseline."""
    teacher = next(m for m in models if m.role == "teacher")
    if getattr(teacher, "task", "ranking") == "generative":
        return _loss_gate(teacher, models)

    def best(role: str) -> Any | None:
        found = [m for m in models if m.role == role and m.val_auc_mean is not None]
        return max(found, key=lambda m: (m.val_auc_mean, m.name)) if found else None

    baseline, sft = best("baseline"), best("sft_baseline")
    passed = all(other is None or teacher.val_auc_mean > other.val_auc_mean for other in (baseline, sft))
    rows = [
        {"name": m.name, "role": m.role, "val_auc_mean": m.val_auc_mean, "auc_mean": m.auc_mean}
        for m in sorted(models, key=lambda m: -(m.val_auc_mean or 0.0)) if m.role in ("teacher", "baseline", "sft_baseline")
    ]  # fmt: skip
    return TeacherGate(
        passed=passed, teacher_val_auc_mean=teacher.val_auc_mean, rows=rows,
        best_baseline=baseline.name if baseline else None, best_baseline_val_auc_mean=baseline.val_auc_mean if baseline else None,
        best_sft=sft.name if sft else None, best_sft_val_auc_mean=sft.val_auc_mean if sft else None,
        vs_best_baseline=(vs_baselines or {}).get(baseline.name) if baseline else None,
    )  # fmt: skip


def _loss_gate(teacher: Any, models: Sequence[Any]) -> TeacherGate:
    """The generative task's gate: a teacher whose val loss is not below the best SFT student's
    teaches nothing that training on the references alone does not (there are no non-LM baselines)."""
    sft = [m for m in models if m.role == "sft_baseline" and m.val_loss is not None]
    best = min(sft, key=lambda m: (m.val_loss, m.name)) if sft else None
    rows = [{"name": m.name, "role": m.role, "val_loss": m.val_loss, "loss": m.loss}
            for m in sorted(models, key=lambda m: m.val_loss if m.val_loss is not None else float("inf")) if m.role in ("teacher", "sft_baseline")]  # fmt: skip
    return TeacherGate(
        passed=best is None or teacher.val_loss < best.val_loss, teacher_val_auc_mean=None, rows=rows, metric="val_loss",
        teacher_val_loss=teacher.val_loss, best_sft=best.name if best else None, best_sft_val_loss=best.val_loss if best else None,
    )  # fmt: skip


# ----------------------------------------------------------------------------- promotion


Objective = Literal["bytes", "params", "auc_mean", "val_loss", "ttft_p99_ms"]


class RegistryEntry(BaseModel):
    """A registered model version as the promotion policy sees it (from its registry tags);
    ``auc_mean`` and ``auc_delta_pct`` are on val, the split decisions use."""

    version: str
    name: str = ""
    auc_mean: float
    auc_delta_pct: float
    params: int
    bytes: int
    ttft_p99_ms: float | None = None
    task: Literal["ranking", "generative"] = "ranking"  # generative: auc_* are unused, val_loss* decide
    val_loss: float | None = None
    val_loss_increase_pct: float | None = None  # vs its teacher

    def objective(self, objective: Objective) -> float | None:
        return getattr(self, objective)


class Promotion(BaseModel):
    """The policy's verdict on one candidate: ``champion`` moves the alias, ``challenger`` does not."""

    verdict: Literal["champion", "challenger"]
    reason: str


def decide_promotion(
    candidate: RegistryEntry,
    champion: RegistryEntry | None,
    *,
    max_auc_drop_pct: float,
    objective: Objective,
    quality_tolerance_pct: float,
    min_gain_pct: float,
    max_val_loss_increase_pct: float = 10.0,
) -> Promotion:
    """Champion only if the candidate meets the quality bar and beats the current champion.

    - The bar: mean-AUC drop vs its teacher within ``max_auc_drop_pct`` (the select bar).
    - ``objective: auc_mean``: it must beat the champion's mean AUC by more than ``min_gain_pct`` %.
    - ``bytes`` / ``params`` / ``ttft_p99_ms`` (lower is better) at equal quality: its mean
      AUC at most ``quality_tolerance_pct`` % below the champion's, and the objective lower
      by more than ``min_gain_pct`` %; on an exact tie of the objective, a higher mean AUC wins.

    The same version is never "better than itself", so re-registering the champion keeps it.
    A generative candidate is judged on val loss instead (:func:`decide_generative_promotion`).
    """
    if candidate.task == "generative":
        return decide_generative_promotion(candidate, champion, max_val_loss_increase_pct=max_val_loss_increase_pct, objective=objective,
                                           quality_tolerance_pct=quality_tolerance_pct, min_gain_pct=min_gain_pct)  # fmt: skip
    if candidate.auc_delta_pct < -max_auc_drop_pct:
        return Promotion(verdict="challenger", reason=f"below the quality bar: mean AUC {candidate.auc_delta_pct:+.2f} % vs its teacher, bar -{max_auc_drop_pct:g} %")
    if champion is None:
        return Promotion(verdict="champion", reason="meets the quality bar and there is no champion yet")
    if champion.version == candidate.version:
        return Promotion(verdict="champion", reason="already the champion")
    if objective == "auc_mean":
        needed = champion.auc_mean * (1 + min_gain_pct / 100)
        if candidate.auc_mean > needed:
            return Promotion(verdict="champion", reason=f"mean AUC {candidate.auc_mean:.4f} beats the champion's {champion.auc_mean:.4f} (v{champion.version})")
        return Promotion(verdict="challenger", reason=f"mean AUC {candidate.auc_mean:.4f} does not beat the champion's {champion.auc_mean:.4f} (v{champion.version}) by {min_gain_pct:g} %")
    mine, theirs = candidate.objective(objective), champion.objective(objective)
    if mine is None:
        return Promotion(verdict="challenger", reason=f"no {objective} measured for the candidate")
    floor = champion.auc_mean * (1 - quality_tolerance_pct / 100)
    if candidate.auc_mean < floor:
        return Promotion(verdict="challenger", reason=f"mean AUC {candidate.auc_mean:.4f} is more than {quality_tolerance_pct:g} % below the champion's {champion.auc_mean:.4f} (v{champion.version})")
    if theirs is None:
        return Promotion(verdict="champion", reason=f"equal quality and the champion (v{champion.version}) has no {objective}")
    if mine < theirs * (1 - min_gain_pct / 100):
        return Promotion(verdict="champion", reason=f"{objective} {mine:g} < the champion's {theirs:g} (v{champion.version}) at equal quality")
    if mine == theirs and candidate.auc_mean > champion.auc_mean:
        return Promotion(verdict="champion", reason=f"same {objective} as the champion (v{champion.version}) and a higher mean AUC")
    return Promotion(verdict="challenger", reason=f"{objective} {mine:g} does not beat the champion's {theirs:g} (v{champion.version}) by {min_gain_pct:g} %")


def decide_generative_promotion(
    candidate: RegistryEntry, champion: RegistryEntry | None, *, max_val_loss_increase_pct: float, objective: Objective,
    quality_tolerance_pct: float, min_gain_pct: float,
) -> Promotion:  # fmt: skip
    """:func:`decide_promotion` for generative models, on val loss (lower is better).

    - The bar: val loss at most ``max_val_loss_increase_pct`` % above its teacher's (the select bar).
    - ``objective: val_loss``: it must be below the champion's by more than ``min_gain_pct`` %.
    - ``bytes`` / ``params`` / ``ttft_p99_ms`` at equal quality: its val loss at most
      ``quality_tolerance_pct`` % above the champion's, and the objective lower by more than
      ``min_gain_pct`` %; on an exact tie of the objective, the lower val loss wins.
    """
    if candidate.val_loss is None or candidate.val_loss_increase_pct is None:
        return Promotion(verdict="challenger", reason="no val loss recorded for the candidate")
    if candidate.val_loss_increase_pct > max_val_loss_increase_pct:
        return Promotion(verdict="challenger", reason=f"below the quality bar: val loss {candidate.val_loss_increase_pct:+.2f} % vs its teacher, bar +{max_val_loss_increase_pct:g} %")
    if champion is None:
        return Promotion(verdict="champion", reason="meets the quality bar and there is no champion yet")
    if champion.version == candidate.version:
        return Promotion(verdict="champion", reason="already the champion")
    if champion.task != "generative" or champion.val_loss is None:
        return Promotion(verdict="challenger", reason=f"the champion (v{champion.version}) is not a generative model with a val loss: promote by hand")
    if objective == "auc_mean":
        return Promotion(verdict="challenger", reason="registry.objective auc_mean does not apply to a generative model; use val_loss")
    if objective == "val_loss":
        needed = champion.val_loss * (1 - min_gain_pct / 100)
        if candidate.val_loss < needed:
            return Promotion(verdict="champion", reason=f"val loss {candidate.val_loss:.4f} below the champion's {champion.val_loss:.4f} (v{champion.version})")
        return Promotion(verdict="challenger", reason=f"val loss {candidate.val_loss:.4f} not below the champion's {champion.val_loss:.4f} (v{champion.version}) by {min_gain_pct:g} %")
    mine, theirs = candidate.objective(objective), champion.objective(objective)
    if mine is None:
        return Promotion(verdict="challenger", reason=f"no {objective} measured for the candidate")
    ceiling = champion.val_loss * (1 + quality_tolerance_pct / 100)
    if candidate.val_loss > ceiling:
        return Promotion(verdict="challenger", reason=f"val loss {candidate.val_loss:.4f} is more than {quality_tolerance_pct:g} % above the champion's {champion.val_loss:.4f} (v{champion.version})")
    if theirs is None:
        return Promotion(verdict="champion", reason=f"equal quality and the champion (v{champion.version}) has no {objective}")
    if mine < theirs * (1 - min_gain_pct / 100):
        return Promotion(verdict="champion", reason=f"{objective} {mine:g} < the champion's {theirs:g} (v{champion.version}) at equal quality")
    if mine == theirs and candidate.val_loss < champion.val_loss:
        return Promotion(verdict="champion", reason=f"same {objective} as the champion (v{champion.version}) and a lower val loss")
    return Promotion(verdict="challenger", reason=f"{objective} {mine:g} does not beat the champion's {theirs:g} (v{champion.version}) by {min_gain_pct:g} %")
