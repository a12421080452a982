"""The generative rows of a study (the paper's Table 1): distillation recipes for a model that writes text.

The arms start from a generative pipeline config (``generative.base``, e.g. the generative
demo) whose ``distill.phases`` are the paper's two-stage recipe: an off-policy phase on the
reference responses, then an on-policy phase (``on_policy_fraction`` > 0) where the student
writes part of each batch and the teacher grades it token by token. Every arm trains the
study's student alone and is compared on its **test response loss** (lower is better), at
equal total steps: a one-phase arm gets both phases' steps on the first phase's settings.

Rows and their arms:
- ``gen_kd_vs_sft``: forward KL (one phase) vs its SFT twin (the same phase on the references only).
- ``gen_losses``: reverse KL and JSD(beta) vs forward KL, one phase each.
- ``gen_schedules``: the two-stage recipe vs one phase of off-policy FKL and vs one phase of
  on-policy FKL; and FKL vs SFT as the first stage of the two. The on-policy arms' sampling
  share of the training wall time goes into the note (the cost of on-policy).
- ``gen_sampling``: the recipe at another sampling temperature, generation length and
  on-policy fraction, each vs the recipe as configured.
- ``gen_teacher_size``: the recipe with each of ``teachers`` (other teacher sizes) vs the
  base's teacher; and the student vs its own teacher (the paper's students surpass theirs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator

from recslm.config import ArchSpec, PipelineConfig, StrictModel, StudentSpec
from recslm.errors import ConfigError
from recslm.reproduce.findings import Direction, Finding, finding

GenerativeRow = Literal["gen_kd_vs_sft", "gen_losses", "gen_schedules", "gen_sampling", "gen_teacher_size"]
GENERATIVE_ROWS: tuple[str, ...] = get_args(GenerativeRow)
METRIC = "loss"  # the test split's response-token cross-entropy (summary.json `loss`)
# the paper's wording for Table 1 (numbers not transcribed: its data is internal and its scale is not ours)
TABLE_1 = "Table 1 (reasoning model)"


class TeacherSize(StrictModel):
    """Another teacher for ``gen_teacher_size``: trained like the base's teacher, only its architecture differs."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="A short name for the arm (gen-teacher-<name>).")
    arch: ArchSpec


class GenerativeStudy(StrictModel):
    """``generative:`` in a study config: the base, the student and the knobs Table 1 varies."""

    base: Path = Field(description="A generative pipeline config (data.source: reviews) whose distill.phases are the two-stage recipe.")
    set: list[str] = Field(default_factory=list, description="Overrides for every generative arm (key.path=value): the budget.")
    student: StudentSpec = Field(description="The student every generative row measures.")
    temperature: float = Field(0.8, gt=0, description="gen_sampling: on-policy sampling temperature compared with the base's (the paper tunes 0.8-0.9).")
    max_new_tokens: int = Field(128, ge=1, description="gen_sampling: on-policy generation length compared with the base's.")
    on_policy_fraction: float = Field(0.5, gt=0, le=1, description="gen_sampling: on-policy fraction of the second phase compared with the base's.")
    teachers: list[TeacherSize] = Field(default_factory=list, description="gen_teacher_size: other teacher sizes (at least one for that row).")
    quick_base: Path | None = Field(None, description="The generative base with --quick (empty: base).")
    quick: list[str] = Field(default_factory=list, description="Overrides with --quick (instead of set).")
    quick_teachers: list[TeacherSize] | None = Field(None, description="teachers with --quick (empty: teachers).")
    quick_max_new_tokens: int | None = Field(None, ge=1, description="max_new_tokens with --quick (empty: max_new_tokens).")

    @field_validator("teachers", "quick_teachers")
    @classmethod
    def _distinct_names(cls, teachers: list[TeacherSize] | None) -> list[TeacherSize] | None:
        names = [t.name for t in teachers or []]
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be distinct, got {names}")
        return teachers

    def for_quick(self) -> GenerativeStudy:
        """The generative part as --quick runs it."""
        teachers = self.teachers if self.quick_teachers is None else self.quick_teachers
        return self.model_copy(update={"base": self.quick_base or self.base, "set": self.quick, "teachers": teachers,
                                       "max_new_tokens": self.quick_max_new_tokens or self.max_new_tokens})  # fmt: skip


def generative_arms(gen: GenerativeStudy, rows: list[str], base: PipelineConfig) -> dict[str, list[str]]:
    """Arm name -> its overrides (on top of the generative base and ``set``), for the generative rows asked for.

    ``base`` is the generative base with ``set`` applied: its phases are the recipe the arms vary.
    """
    wanted = [r for r in rows if r in GENERATIVE_ROWS]
    if not wanted:
        return {}
    first, second = _recipe_phases(gen, base)
    total = first["train"]["max_steps"] + second["train"]["max_steps"]  # both set: checked by _recipe_phases
    student = f"students=[{json.dumps(gen.student.model_dump(mode='json', exclude_none=True))}]"

    def phases(*items: dict[str, Any]) -> str:
        return f"distill.phases={json.dumps(list(items))}"

    def one_phase(loss: str, on_policy_fraction: float = 0.0) -> dict[str, Any]:
        phase = {"loss": loss, "train": {**first["train"], "max_steps": total}}
        return {**phase, "on_policy_fraction": on_policy_fraction} if on_policy_fraction else phase

    out: dict[str, list[str]] = {}
    if {"gen_kd_vs_sft", "gen_losses", "gen_schedules"} & set(wanted):
        out["gen-fkl"] = [student, phases(one_phase("forward_kl")), "distill.sft_baseline=true"]
    if "gen_losses" in wanted:
        out["gen-rkl"] = [student, phases(one_phase("reverse_kl"))]
        out["gen-jsd"] = [student, phases(one_phase("jsd"))]
    if {"gen_schedules", "gen_sampling", "gen_teacher_size"} & set(wanted):
        out["gen-recipe"] = [student]
    if "gen_schedules" in wanted:
        out["gen-ofkl"] = [student, phases(one_phase("forward_kl", second["on_policy_fraction"]))]
        out["gen-sft-ofkl"] = [student, phases({**first, "loss": "sft"}, second)]
    if "gen_sampling" in wanted:
        _check_knobs_differ(gen, base, second["on_policy_fraction"])
        out["gen-temperature"] = [student, f"distill.sampling.temperature={gen.temperature}"]
        out["gen-length"] = [student, f"distill.sampling.max_new_tokens={gen.max_new_tokens}"]
        out["gen-fraction"] = [student, f"distill.phases.1.on_policy_fraction={gen.on_policy_fraction}"]
    if "gen_teacher_size" in wanted:
        if not gen.teachers:
            raise ConfigError("generative.teachers: the gen_teacher_size row needs at least one other teacher size")
        for teacher in gen.teachers:
            out[f"gen-teacher-{teacher.name}"] = [student, f"teacher.arch={json.dumps(teacher.arch.model_dump(mode='json', exclude_none=True))}"]
    return out


def _check_knobs_differ(gen: GenerativeStudy, base: PipelineConfig, fraction: float) -> None:
    """A gen_sampling knob equal to the base's value would compare the recipe with itself."""
    same = [f"{field} ({value:g})" for field, value, base_value in (("temperature", gen.temperature, base.distill.sampling.temperature),
            ("max_new_tokens", gen.max_new_tokens, base.distill.sampling.max_new_tokens), ("on_policy_fraction", gen.on_policy_fraction, fraction))
            if value == base_value]  # fmt: skip
    if same:
        raise ConfigError(f"generative: {', '.join(same)} equal the base's ({gen.base}): gen_sampling compares another value with the recipe's")


def _recipe_phases(gen: GenerativeStudy, base: PipelineConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base's two phases as plain mappings, checked to be the two-stage recipe (off-policy, then on-policy)."""
    if base.task != "generative":
        raise ConfigError(f"generative.base: {gen.base} is a {base.task} config; the generative rows need data.source: reviews")
    phases = base.distill.phases
    if len(phases) != 2 or phases[0].on_policy_fraction != 0 or phases[1].on_policy_fraction == 0:
        raise ConfigError(f"generative.base: {gen.base}: distill.phases must be the two-stage recipe: an off-policy phase, then one with "
                          f"on_policy_fraction > 0 (got {[(p.loss, p.on_policy_fraction) for p in phases]})")  # fmt: skip
    if any(p.train.max_steps <= 0 for p in phases):
        raise ConfigError(f"generative.base: {gen.base}: give both distill phases train.max_steps (the one-phase arms get their sum)")
    first, second = (p.model_dump(mode="json", exclude_defaults=True) for p in phases)
    return first, {**second, "on_policy_fraction": phases[1].on_policy_fraction}


Models = dict[str, list[dict[str, dict[str, Any]]]]  # arm -> per seed {model name: summary line}
Stages = dict[str, list[dict[str, dict[str, Any]]]]  # arm -> per seed {stage name: metrics}


def generative_findings(gen: GenerativeStudy, rows: list[str], models: Models, stages: Stages) -> list[Finding]:
    """The findings of the generative rows asked for, on the test response loss."""
    name = gen.student.name
    metric = f"test {METRIC}"

    def values(arm: str, model: str = name) -> list[float]:
        return [float(seed_models[model][METRIC]) for seed_models in models[arm]]

    def compare(row: str, claim: str, paper: str, a: tuple[str, list[float]], b: tuple[str, list[float]], direction: Direction,
                note: str = "") -> Finding:  # fmt: skip
        return finding(row, claim, paper, metric, a[0], b[0], {a[0]: a[1], b[0]: b[1]}, direction, None, note)

    def share(arm: str) -> str:
        shares = [float(s.get(f"distill.{name}", {}).get("sampling_share", 0.0)) for s in stages.get(arm, [])]
        return f"{sum(shares) / len(shares):.0%}" if shares else "n/a"

    out: list[Finding] = []
    if "gen_kd_vs_sft" in rows:
        out.append(compare("gen_kd_vs_sft", "Forward-KL distillation ends below fine-tuning on the references (lower test loss)",
                           f"{TABLE_1}: distilled students ahead of SFT", ("SFT", values("gen-fkl", f"{name}-sft")), ("FKL", values("gen-fkl")), "negative"))  # fmt: skip
    if "gen_losses" in rows:
        fkl = ("FKL", values("gen-fkl"))
        out.append(compare("gen_losses", "Reverse KL does not beat forward KL (word level, off-policy)", f"{TABLE_1}: the recipe distils with forward KL",
                           fkl, ("RKL", values("gen-rkl")), "positive"))  # fmt: skip
        out.append(compare("gen_losses", "JSD(beta) does not beat forward KL (word level, off-policy)", f"{TABLE_1}: the recipe distils with forward KL",
                           fkl, ("JSD", values("gen-jsd")), "positive"))  # fmt: skip
    if "gen_schedules" in rows:
        recipe = ("FKL -> oFKL", values("gen-recipe"))
        note = (f"sampling share of the distill stage's wall time: FKL -> oFKL {share('gen-recipe')}, oFKL alone {share('gen-ofkl')}, "
                f"SFT -> oFKL {share('gen-sft-ofkl')}; every arm at equal total steps")  # fmt: skip
        two_stage = f"{TABLE_1}: two-stage (FKL, then on-policy FKL) beats a single stage"
        out.append(compare("gen_schedules", "Two stages beat one phase of off-policy FKL at equal steps", two_stage, ("FKL", values("gen-fkl")), recipe, "negative", note))
        out.append(compare("gen_schedules", "Two stages beat one phase of on-policy FKL at equal steps", two_stage, ("oFKL", values("gen-ofkl")), recipe, "negative"))
        out.append(compare("gen_schedules", "Distilling in the first stage (FKL) beats SFT there, before the same on-policy stage",
                           f"{TABLE_1}: the first stage is word-level FKL", ("SFT -> oFKL", values("gen-sft-ofkl")), recipe, "negative"))  # fmt: skip
    if "gen_sampling" in rows:
        recipe = ("recipe", values("gen-recipe"))
        paper = f"{TABLE_1}: the on-policy fraction, generation length (about 300 tokens) and temperature (0.8-0.9) are tuned and matter"
        out.append(compare("gen_sampling", f"Sampling at temperature {gen.temperature:g} changes the result", paper,
                           recipe, (f"temperature {gen.temperature:g}", values("gen-temperature")), "different"))  # fmt: skip
        out.append(compare("gen_sampling", f"Longer on-policy generations ({gen.max_new_tokens} tokens) change the result", paper,
                           recipe, (f"{gen.max_new_tokens} new tokens", values("gen-length")), "different"))  # fmt: skip
        out.append(compare("gen_sampling", f"An on-policy fraction of {gen.on_policy_fraction:g} changes the result", paper,
                           recipe, (f"on-policy {gen.on_policy_fraction:g}", values("gen-fraction")), "different",
                           f"sampling share: recipe {share('gen-recipe')}, on-policy {gen.on_policy_fraction:g} {share('gen-fraction')}"))  # fmt: skip
    if "gen_teacher_size" in rows:
        base_teacher = values("gen-recipe", "teacher")
        for teacher in gen.teachers:
            arm = f"gen-teacher-{teacher.name}"
            other = values(arm, "teacher")
            note = f"teachers' own test loss: base {base_teacher[0]:.4f}, {teacher.name} {other[0]:.4f}"
            out.append(compare("gen_teacher_size", f"The student taught by the {teacher.name} teacher ends below the one taught by the base teacher",
                               f"{TABLE_1}: a smaller teacher can beat a larger one", ("base teacher", values("gen-recipe")),
                               (f"{teacher.name} teacher", values(arm)), "negative", note))  # fmt: skip
        out.append(compare("gen_teacher_size", "The distilled student surpasses its teacher (lower test loss)", f"{TABLE_1}: students can surpass their teachers",
                           ("teacher", base_teacher), ("student (recipe)", values("gen-recipe")), "negative"))  # fmt: skip
    return out
