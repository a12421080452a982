"""The study: which pipeline runs a reproduction needs and which findings it reads from them.

A study starts from a pipeline config (``base``) and runs it once per *arm* and per seed,
each arm a list of ``--set`` overrides (the loss, a pruning ratio), each seed
``distill.seed`` (the student's initialization and data order; the teacher and data are
shared, so the store trains them once). A *value* is one model's metric in one arm's run;
a finding compares two values seed by seed (:mod:`recslm.reproduce.findings`).

Rows (``rows`` in the config) and what they measure, on the test split's mean AUC of the
study's ``student``:
- ``kd_vs_sft`` (Table 2, Fig. 2): the student distilled (the recipe) vs the same student
  fine-tuned on the labels only (same phases and budget); beside it, the teacher's gap to SFT.
- ``loss_choice``: reverse KL and JSD(beta) vs the recipe's forward KL; the prompt-KD term on vs off.
- ``prune_ratio`` (Table 3): one-shot OSSCAR at each of ``prune_ratios`` of the MLP neurons,
  no re-distillation, vs the unpruned student.
- ``size``: the most pruned student vs the teacher: AUC (equivalence within ``size_margin``)
  and the parameter and byte ratios beside it.

The generative rows (``gen_*``, the paper's Table 1) run on their own base, a generative
config (``generative:``), and measure test response loss (:mod:`recslm.reproduce.generative`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from recslm.config import StrictModel, StudentSpec
from recslm.reproduce.findings import Direction, Finding, finding
from recslm.reproduce.generative import GenerativeRow, GenerativeStudy

RankingRow = Literal["kd_vs_sft", "loss_choice", "prune_ratio", "size"]
RowName = Literal[RankingRow, GenerativeRow]  # one literal (nested literals flatten): one error message naming every row
RANKING_ROWS: tuple[str, ...] = get_args(RankingRow)
# every arm's run: the study's student alone, no deploy, no registry; select keeps it whatever its AUC
ARM_BASE = ["distill.sft_baseline=false", "prune.enabled=false", "quantize.enabled=false", "serve.enabled=false", "bench.enabled=false", "registry.enabled=false",
            "select.max_auc_drop_pct=100", "select.require_teacher_gate=false"]  # fmt: skip


class StudyConfig(StrictModel):
    """``configs/reproduce.yaml``: the base pipeline, seeds, rows and the knobs that trade time for interval width."""

    base: Path = Field(description="The pipeline config every arm starts from (its data, teacher, distill recipe; its students are replaced).")
    set: list[str] = Field(default_factory=list, description="Overrides applied to the base for every arm (key.path=value).")
    student: StudentSpec = Field(description="The student every row measures (each arm trains only it).")
    seeds: list[int] = Field([0, 1, 2], min_length=2, description="distill.seed of each paired repetition: more seeds, narrower intervals, longer study.")
    rows: list[RowName] = Field(["kd_vs_sft", "loss_choice", "prune_ratio", "size"], min_length=1)
    prune_ratios: list[float] = Field([0.25, 0.5, 0.75, 0.875], min_length=1, description="One-shot MLP pruning ratios (prune_ratio, size).")
    size_margin: float = Field(0.01, gt=0, description="size: AUC difference to the teacher the paper's 'modest loss' allows (absolute mean AUC).")
    quick_base: Path | None = Field(None, description="The base with --quick (empty: base).")
    quick: list[str] = Field(default_factory=list, description="Overrides added by --quick (instead of set): tiny settings, every row, a few minutes.")
    quick_seeds: list[int] = Field([0, 1], min_length=2, description="Seeds with --quick.")
    quick_prune_ratios: list[float] = Field([0.5, 0.875], min_length=1, description="prune_ratios with --quick.")
    generative: GenerativeStudy | None = Field(None, description="The generative rows' base, student and knobs (needed by the gen_* rows).")

    def for_quick(self) -> StudyConfig:
        """The study as --quick runs it: the quick base, overrides, seeds and ratios (every row kept)."""
        return self.model_copy(update={"base": self.quick_base or self.base, "set": self.quick, "seeds": self.quick_seeds,
                                       "prune_ratios": sorted(set(self.quick_prune_ratios)),
                                       "generative": self.generative.for_quick() if self.generative else None})  # fmt: skip

    def ranking_rows(self) -> list[str]:
        return [r for r in self.rows if r in RANKING_ROWS]

    def generative_rows(self) -> list[str]:
        return [r for r in self.rows if r not in RANKING_ROWS]

    @field_validator("seeds", "quick_seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("prune_ratios", "quick_prune_ratios")
    @classmethod
    def _ratios(cls, ratios: list[float]) -> list[float]:
        if any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"prune_ratios must lie strictly between 0 and 1, got {ratios}")
        return sorted(set(ratios))

    @model_validator(mode="after")
    def _size_needs_pruning(self) -> StudyConfig:
        if "size" in self.rows and not self.prune_ratios:
            raise ValueError("rows: size reads the most pruned student; give prune_ratios")
        if self.generative_rows() and self.generative is None:
            raise ValueError(f"rows: {', '.join(self.generative_rows())} need a generative: section (its base, student and knobs)")
        return self


def arms(study: StudyConfig) -> dict[str, list[str]]:
    """Arm name -> its overrides (on top of the base, ``set`` and :data:`ARM_BASE`), for the ranking rows asked for."""
    if not study.ranking_rows():
        return {}
    student = f"students=[{_student_yaml(study)}]"
    out: dict[str, list[str]] = {"kd": [student, "distill.sft_baseline=true"]}
    if "loss_choice" in study.rows:
        out["rkl"] = [student, "distill.phases.0.loss=reverse_kl"]
        out["jsd"] = [student, "distill.phases.0.loss=jsd"]
        out["no-prompt-kd"] = [student, "distill.prompt_weight=0"]
    if {"prune_ratio", "size"} & set(study.rows):
        for ratio in study.prune_ratios:
            pruning = ["prune.enabled=true", f"prune.schedule=[{{mlp_fraction: {ratio}}}]", "prune.redistill=null"]
            arm = prune_arm(study, ratio)
            out[arm] = out.get(arm, [student]) + pruning
    return out


def prune_arm(study: StudyConfig, ratio: float) -> str:
    """The arm whose run prunes at ``ratio``: the largest ratio rides on the KD arm (the pruned
    model is one more stage of that run, its unpruned student the reference), every other ratio
    is an arm of its own; the student and the teacher come from the store either way."""
    return "kd" if ratio == max(study.prune_ratios) else f"prune-{ratio * 100:g}"


def _student_yaml(study: StudyConfig) -> str:
    """The study's student as an inline YAML (JSON) mapping, for the ``students`` override."""
    import json

    return json.dumps(study.student.model_dump(mode="json", exclude_none=True))


Values = dict[str, dict[str, Any]]  # arm -> per seed (in seed order) a list of run summaries' model lines by name


def findings(study: StudyConfig, models: dict[str, list[dict[str, dict[str, Any]]]], metric: str = "auc_mean") -> list[Finding]:
    """The findings of the ranking rows asked for, from ``models``: arm -> one {model name: summary line} per seed."""
    if not study.ranking_rows():
        return []
    student, sft = study.student.name, f"{study.student.name}-sft"

    def values(arm: str, name: str, field: str = metric) -> list[float]:
        return [float(seed_models[name][field]) for seed_models in models[arm]]

    def compare(row: str, claim: str, paper: str, a: tuple[str, list[float]], b: tuple[str, list[float]], direction: Direction,
                margin: float | None = None, note: str = "") -> Finding:  # fmt: skip
        return finding(row, claim, paper, f"test {metric}", a[0], b[0], {a[0]: a[1], b[0]: b[1]}, direction, margin, note)

    kd, out = ("KD (recipe)", values("kd", student)), []
    if "kd_vs_sft" in study.rows:
        sft_values = ("SFT", values("kd", sft))
        out.append(compare("kd_vs_sft", "Distillation from the teacher beats fine-tuning on the labels alone",
                           "Table 2, Fig. 2: KD students lose less AUC to the teacher than SFT students", sft_values, kd, "positive"))  # fmt: skip
        out.append(compare("kd_vs_sft", "The teacher is ahead of the SFT student (the gap KD can close)", "the premise of Table 2",
                           sft_values, ("teacher", values("kd", "teacher")), "positive"))  # fmt: skip
    if "loss_choice" in study.rows:
        out.append(compare("loss_choice", "Reverse KL does not beat the recipe's forward KL", "the recipe: 90 % forward KL + 10 % CE on the answer token",
                           kd, ("reverse KL", values("rkl", student)), "negative"))  # fmt: skip
        out.append(compare("loss_choice", "JSD(beta) does not beat the recipe's forward KL", "the recipe: 90 % forward KL + 10 % CE on the answer token",
                           kd, ("JSD", values("jsd", student)), "negative"))  # fmt: skip
        out.append(compare("loss_choice", "The prompt-KD term (5 %) helps", "the recipe: plus 5 % KD over the prompt tokens",
                           ("no prompt KD", values("no-prompt-kd", student)), kd, "positive"))  # fmt: skip
    if "prune_ratio" in study.rows:
        for ratio in study.prune_ratios:
            arm = prune_arm(study, ratio)
            out.append(compare("prune_ratio", f"One-shot pruning of {ratio:.1%} of MLP neurons lowers AUC (before re-training)",
                               "Table 3: AUC falls as more MLP neurons are pruned", ("unpruned", values(arm, student)),
                               (f"{ratio:.1%} MLP pruned", values(arm, f"{student}-pruned")), "negative"))  # fmt: skip
    if "size" in study.rows:
        arm = prune_arm(study, max(study.prune_ratios))
        pruned = f"{student}-pruned"
        teacher_params, final_params = values(arm, "teacher", "params"), values(arm, pruned, "params")
        teacher_ne, final_ne = values(arm, "teacher", "params_non_embedding"), values(arm, pruned, "params_non_embedding")
        note = (f"teacher {teacher_params[0]:,.0f} -> final {final_params[0]:,.0f} parameters ({teacher_params[0] / final_params[0]:.1f}x), "
                f"without embeddings {teacher_ne[0]:,.0f} -> {final_ne[0]:,.0f} ({teacher_ne[0] / final_ne[0]:.1f}x), "
                f"bytes {values(arm, 'teacher', 'bytes')[0] / values(arm, pruned, 'bytes')[0]:.1f}x smaller")  # fmt: skip
        out.append(compare("size", f"The final model ({max(study.prune_ratios):.1%} MLP pruned) keeps the teacher's AUC within {study.size_margin:g}",
                           "abstract: >20x smaller for ranking with modest AUC loss", ("teacher", values(arm, "teacher")),
                           ("final", values(arm, pruned)), "equivalent", study.size_margin, note))  # fmt: skip
    return out


def load_study(path: Path) -> StudyConfig:
    """A study config from YAML; errors name the file and the field."""
    from pydantic import ValidationError

    from recslm.config import format_validation_error
    from recslm.errors import ConfigError
    from recslm.yamlfile import YamlError, load_yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: study config not found")
    try:
        raw = load_yaml(file.read_text()) or {}
    except YamlError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(file))) from None
    bases = [("base", study.base), ("quick_base", study.quick_base)]
    if study.generative is not None:
        bases += [("generative.base", study.generative.base), ("generative.quick_base", study.generative.quick_base)]
    for where, base in bases:
        if base is not None and not Path(base).is_file():
            raise ConfigError(f"{file}: {where}: {base} is not a pipeline config file")
    return study


def study_with_rows(study: StudyConfig, rows: list[str], source: Path | str) -> StudyConfig:
    """``study`` restricted to ``rows`` (the CLI's --rows), validated like the config's own rows:
    an unknown row or a missing section names the file."""
    from pydantic import ValidationError

    from recslm.config import format_validation_error
    from recslm.errors import ConfigError

    try:
        return StudyConfig.model_validate({**study.model_dump(), "rows": rows})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{source} (--rows)")) from None
