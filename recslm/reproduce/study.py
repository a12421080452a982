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
- ``scarce_labels`` (Table 2, Fig. 2, where distillation should help): students see the
  labels of ``label_fraction`` of the training groups; (a) SFT on that subset, (b) KD + CE on
  it, (c) KD on every training prompt (the teacher needs no labels) + CE on the subset.
- ``loss_choice``: reverse KL and JSD(beta) vs the recipe's forward KL; the prompt-KD term on vs off.
- ``prune_ratio`` (Table 3): one-shot OSSCAR at each of ``prune_ratios`` of the MLP neurons,
  no re-distillation, vs the unpruned student.
- ``size``: the most pruned student vs the teacher: AUC (equivalence within ``size_margin``)
  and the parameter and byte ratios beside it.
- ``redistill_loss`` (Table 2's other half): one-shot pruning of ``redistill_ratio`` of the
  MLP neurons, then ``redistill_steps`` of re-training by KD from the unpruned student vs by
  SFT on the labels (``prune.redistill.loss``), equal steps.
- ``gradual`` (Table 4): the same ratio reached in two steps (half, then all of it), each
  followed by half the re-distillation steps, vs one-shot with all of them: equal total steps.
- ``calibration`` (Fig. 5): one-shot pruning of ``redistill_ratio`` of the MLP neurons, no
  re-training, calibrated on ``calibration_counts`` in-domain training prompts or
  ``calibration_text_counts`` generic texts (the bundled reviews): in-domain vs text at equal
  count, more vs fewer in-domain prompts, the most text vs the most in-domain prompts.
- ``quantization`` (Table 7): the unpruned student quantized FP8, W8A8-INT, W4A16 GPTQ and
  W4A16 QuantEase at each of ``quant_group_sizes``: FP8 and W8A8 vs unquantized (equivalence
  within ``quant_margin``), GPTQ vs unquantized, QuantEase vs GPTQ. The calibration draw is
  seeded by the student's seed, so the interval spans calibration and student seeds.
- ``serving`` (Table 10's shape): the most pruned arm's student and pruned student on the local
  engine, member latency by k with and without the prefix cache (:mod:`recslm.reproduce.serving`).
- ``kv_prune`` (Table 5): ``kv_fraction`` of the key/value groups pruned, then re-distilled,
  vs the unpruned student (equivalence within ``size_margin``), with the prefill speed-up
  at the longest profiled length beside it.

The generative rows (``gen_*``, the paper's Table 1) run on their own base, a generative
config (``generative:``), and measure test response loss (:mod:`recslm.reproduce.generative`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from recslm.config import StrictModel, StudentSpec
from recslm.reproduce.findings import Direction, Finding, finding
from recslm.reproduce.generative import GenerativeRow, GenerativeStudy

RankingRow = Literal["kd_vs_sft", "scarce_labels", "loss_choice", "prune_ratio", "size", "redistill_loss", "gradual", "calibration", "quantization", "kv_prune", "serving"]
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
    rows: list[RowName] = Field(["kd_vs_sft", "scarce_labels", "loss_choice", "prune_ratio", "size", "redistill_loss", "gradual", "calibration", "quantization", "kv_prune", "serving"], min_length=1)
    prune_ratios: list[float] = Field([0.25, 0.5, 0.75, 0.875], min_length=1, description="One-shot MLP pruning ratios (prune_ratio, size).")
    size_margin: float = Field(0.01, gt=0, description="size, kv_prune: AUC difference the paper's 'modest loss' allows (absolute mean AUC).")
    label_fraction: float = Field(0.2, gt=0, lt=1, description="scarce_labels: the share of training groups whose labels the students see.")
    redistill_ratio: float = Field(0.75, gt=0, lt=1, description="redistill_loss, gradual, calibration: the MLP ratio pruned; one whose one-shot pruning loses at least 1 % AUC (read it off prune_ratio).")
    redistill_steps: int = Field(200, ge=2, description="redistill_loss, gradual, kv_prune: re-training steps after pruning, the same in every arm (gradual: half after each of its two steps); even.")
    redistill_learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate of the re-training after pruning.")
    kv_fraction: float = Field(0.5, gt=0, lt=1, description="kv_prune: the share of key/value groups pruned.")
    calibration_counts: list[int] = Field([64, 128, 256], min_length=2, description="calibration: in-domain calibration prompts of each arm.")
    calibration_text_counts: list[int] = Field([256, 1024], min_length=1, description="calibration: generic-text calibration prompts of each arm.")
    quant_group_sizes: list[int] = Field([32, 64], min_length=1, description="quantization: W4A16 group sizes (each must divide the student's layer widths); small groups degrade less.")
    quant_margin: float = Field(0.002, gt=0, description="quantization: the AUC change FP8 and W8A8 may cost and still count as lossless (absolute mean AUC).")
    quick_quant_group_sizes: list[int] = Field([32], min_length=1, description="quant_group_sizes with --quick.")
    serving_members: int = Field(20, ge=2, description="serving: test members timed per setting (the median is kept).")
    quick_serving_members: int = Field(3, ge=2, description="serving_members with --quick.")
    quick_redistill_steps: int = Field(10, ge=2, description="redistill_steps with --quick.")
    quick_calibration_counts: list[int] = Field([16, 64], min_length=2, description="calibration_counts with --quick.")
    quick_calibration_text_counts: list[int] = Field([64], min_length=1, description="calibration_text_counts with --quick.")
    quick_base: Path | None = Field(None, description="The base with --quick (empty: base).")
    quick: list[str] = Field(default_factory=list, description="Overrides added by --quick (instead of set): tiny settings, every row, a few minutes.")
    quick_seeds: list[int] = Field([0, 1], min_length=2, description="Seeds with --quick.")
    quick_prune_ratios: list[float] = Field([0.5, 0.875], min_length=1, description="prune_ratios with --quick.")
    generative: GenerativeStudy | None = Field(None, description="The generative rows' base, student and knobs (needed by the gen_* rows).")

    def for_quick(self) -> StudyConfig:
        """The study as --quick runs it: the quick base, overrides, seeds and ratios (every row kept)."""
        return self.model_copy(update={"base": self.quick_base or self.base, "set": self.quick, "seeds": self.quick_seeds,
                                       "prune_ratios": sorted(set(self.quick_prune_ratios)), "redistill_steps": self.quick_redistill_steps, "serving_members": self.quick_serving_members,
                                       "quant_group_sizes": self.quick_quant_group_sizes, "calibration_counts": self.quick_calibration_counts, "calibration_text_counts": self.quick_calibration_text_counts,
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

    @field_validator("calibration_counts", "calibration_text_counts", "quick_calibration_counts", "quick_calibration_text_counts")
    @classmethod
    def _counts(cls, counts: list[int]) -> list[int]:
        if any(c < 1 for c in counts) or len(set(counts)) != len(counts):
            raise ValueError(f"calibration counts must be distinct positive numbers of prompts, got {counts}")
        return counts

    @field_validator("redistill_steps", "quick_redistill_steps")
    @classmethod
    def _even(cls, steps: int) -> int:
        if steps % 2:
            raise ValueError(f"must be even (gradual re-trains half of them after each of its two steps), got {steps}")
        return steps

    @model_validator(mode="after")
    def _size_needs_pruning(self) -> StudyConfig:
        if "size" in self.rows and not self.prune_ratios:
            raise ValueError("rows: size reads the most pruned student; give prune_ratios")
        if self.generative_rows() and self.generative is None:
            raise ValueError(f"rows: {', '.join(self.generative_rows())} need a generative: section (its base, student and knobs)")
        return self


QUANT_SCHEMES = ("fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease")


def arms(study: StudyConfig) -> dict[str, list[str]]:
    """Arm name -> its overrides (on top of the base, ``set`` and :data:`ARM_BASE`), for the ranking rows asked for."""
    if not study.ranking_rows():
        return {}
    student = f"students=[{_student_yaml(study)}]"
    out: dict[str, list[str]] = {"kd": [student, "distill.sft_baseline=true"]} if {"kd_vs_sft", "loss_choice"} & set(study.rows) else {}
    if "loss_choice" in study.rows:
        out["rkl"] = [student, "distill.phases.0.loss=reverse_kl"]
        out["jsd"] = [student, "distill.phases.0.loss=jsd"]
        out["no-prompt-kd"] = [student, "distill.prompt_weight=0"]
    if {"prune_ratio", "size", "serving"} & set(study.rows):
        for ratio in study.prune_ratios if {"prune_ratio", "size"} & set(study.rows) else [max(study.prune_ratios)]:
            pruning = ["prune.enabled=true", f"prune.schedule=[{{mlp_fraction: {ratio}}}]", "prune.redistill=null"]
            arm = prune_arm(study, ratio)
            out[arm] = out.get(arm, [student]) + pruning
    if "scarce_labels" in study.rows:
        labels = f"distill.label_fraction={study.label_fraction}"
        out["labels"] = [student, labels, "distill.sft_baseline=true"]  # KD + CE on the labeled groups, and SFT on them
        out["labels-kd-all"] = [student, labels, "distill.unlabeled=kd"]  # + KD alone on the others
    ratio, steps = study.redistill_ratio, study.redistill_steps
    if {"redistill_loss", "gradual"} & set(study.rows):
        out["prune-kd"] = [student, *_retrained(study, [{"mlp_fraction": ratio}], steps, "forward_kl")]
    if "redistill_loss" in study.rows:
        out["prune-sft"] = [student, *_retrained(study, [{"mlp_fraction": ratio}], steps, "sft")]
    if "gradual" in study.rows:
        out["gradual"] = [student, *_retrained(study, [{"mlp_fraction": ratio / 2}, {"mlp_fraction": ratio}], steps // 2, "forward_kl")]
    if "calibration" in study.rows:
        for source, counts in (("records", study.calibration_counts), ("text", study.calibration_text_counts)):
            for count in counts:
                out[f"calib-{source}-{count}"] = [student, "prune.enabled=true", f"prune.schedule=[{{mlp_fraction: {ratio}}}]", "prune.redistill=null",
                                                  f"prune.calibration={{source: {source}, count: {count}}}"]  # fmt: skip
    if "quantization" in study.rows:
        for group in study.quant_group_sizes:
            out[f"quant-g{group}"] = [student, "quantize.enabled=true", f"quantize.schemes={json.dumps(list(QUANT_SCHEMES))}", f"quantize.group_size={group}"]
    if "kv_prune" in study.rows:
        out["kv"] = [student, *_retrained(study, [{"heads_fraction": study.kv_fraction}], steps, "forward_kl")]
    return out


def _retrained(study: StudyConfig, schedule: list[dict[str, float]], steps_per_step: int, loss: str) -> list[str]:
    """Overrides that prune on ``schedule`` and re-train ``steps_per_step`` after each step with
    ``loss``, at a fixed budget (no validation inside: every arm gets exactly its steps)."""
    redistill = {"max_steps": steps_per_step, "learning_rate": study.redistill_learning_rate, "eval_steps": 0, "save_steps": steps_per_step, "loss": loss}
    return ["prune.enabled=true", f"prune.schedule={json.dumps(schedule)}", f"prune.redistill={json.dumps(redistill)}"]


def prune_arm(study: StudyConfig, ratio: float) -> str:
    """The arm whose run prunes at ``ratio``: the largest ratio rides on the KD arm (the pruned
    model is one more stage of that run, its unpruned student the reference), every other ratio
    is an arm of its own; the student and the teacher come from the store either way."""
    return "kd" if ratio == max(study.prune_ratios) else f"prune-{ratio * 100:g}"


def _student_yaml(study: StudyConfig) -> str:
    """The study's student as an inline YAML (JSON) mapping, for the ``students`` override."""
    return json.dumps(study.student.model_dump(mode="json", exclude_none=True))


Values = dict[str, dict[str, Any]]  # arm -> per seed (in seed order) a list of run summaries' model lines by name


def findings(study: StudyConfig, models: dict[str, list[dict[str, dict[str, Any]]]], metric: str = "auc_mean",
             stages: dict[str, list[dict[str, dict[str, Any]]]] | None = None) -> list[Finding]:  # fmt: skip
    """The findings of the ranking rows asked for, from ``models``: arm -> one {model name: summary line} per seed
    (and ``stages``: arm -> one {stage: metrics} per seed, for the prefill speed-up of kv_prune)."""
    if not study.ranking_rows():
        return []
    student, sft = study.student.name, f"{study.student.name}-sft"

    def values(arm: str, name: str, field: str = metric) -> list[float]:
        return [float(seed_models[name][field]) for seed_models in models[arm]]

    def compare(row: str, claim: str, paper: str, a: tuple[str, list[float]], b: tuple[str, list[float]], direction: Direction,
                margin: float | None = None, note: str = "") -> Finding:  # fmt: skip
        return finding(row, claim, paper, f"test {metric}", a[0], b[0], {a[0]: a[1], b[0]: b[1]}, direction, margin, note)

    out: list[Finding] = []
    kd = ("KD (recipe)", values("kd", student)) if "kd" in models else ("KD (recipe)", [])
    if "kd_vs_sft" in study.rows:
        sft_values = ("SFT", values("kd", sft))
        out.append(compare("kd_vs_sft", "Distillation from the teacher beats fine-tuning on the labels alone",
                           "Table 2, Fig. 2: KD students lose less AUC to the teacher than SFT students", sft_values, kd, "positive"))  # fmt: skip
        out.append(compare("kd_vs_sft", "The teacher is ahead of the SFT student (the gap KD can close)", "the premise of Table 2",
                           sft_values, ("teacher", values("kd", "teacher")), "positive"))  # fmt: skip
    if "scarce_labels" in study.rows:
        share = f"{study.label_fraction:.0%}"
        sft_subset = (f"SFT on {share}", values("labels", sft))
        kd_subset = (f"KD + CE on {share}", values("labels", student))
        kd_all = (f"KD on all + CE on {share}", values("labels-kd-all", student))
        teacher_gap = sum(t - s for t, s in zip(values("labels", "teacher"), sft_subset[1])) / len(sft_subset[1])
        note = f"the teacher is {teacher_gap:+.4f} above SFT on {share} of the labels"
        paper = "Table 2, Fig. 2: KD students lose less AUC to the teacher than SFT students"
        out.append(compare("scarce_labels", f"With labels for {share} of the groups, KD + CE beats SFT on the same groups", paper, sft_subset, kd_subset, "positive", note=note))
        out.append(compare("scarce_labels", f"KD on every prompt + CE on {share} beats SFT on {share}", paper, sft_subset, kd_all, "positive", note=note))
        out.append(compare("scarce_labels", "KD on the unlabeled prompts adds to KD on the labeled ones", "the teacher needs no labels", kd_subset, kd_all, "positive"))
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
    out += _retraining_findings(study, values, compare, stages or {})
    return out


def _retraining_findings(study: StudyConfig, values: Any, compare: Any, stages: dict[str, list[dict[str, dict[str, Any]]]]) -> list[Finding]:
    """redistill_loss, gradual and kv_prune: pruned students re-trained at equal steps."""
    student, pruned, out = study.student.name, f"{study.student.name}-pruned", []
    ratio, steps = study.redistill_ratio, study.redistill_steps

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    if {"redistill_loss", "gradual"} & set(study.rows):
        one_shot = ("one-shot, KD", values("prune-kd", pruned))
        unpruned = mean(values("prune-kd", student))
    if "redistill_loss" in study.rows:
        sft = values("prune-sft", pruned)
        note = (f"unpruned {unpruned:.4f}; after {ratio:.1%} MLP pruning and {steps} steps: KD {mean(one_shot[1]):.4f} "
                f"({(mean(one_shot[1]) / unpruned - 1) * 100:+.2f} %), SFT {mean(sft):.4f} ({(mean(sft) / unpruned - 1) * 100:+.2f} %)")  # fmt: skip
        out.append(compare("redistill_loss", f"After pruning {ratio:.1%} of MLP neurons, re-training by KD beats SFT (equal steps)",
                           "Table 2: after pruning, KD loses -0.06 % AUC where SFT loses -0.62 % (8B student)",
                           ("one-shot, SFT", sft), one_shot, "positive", note=note))  # fmt: skip
    if "gradual" in study.rows:
        gradual = values("gradual", pruned)
        note = f"unpruned {unpruned:.4f}; one-shot {mean(one_shot[1]):.4f}, gradual ({ratio / 2:.1%} then {ratio:.1%}, {steps // 2} steps after each) {mean(gradual):.4f}"
        out.append(compare("gradual", f"Pruning {ratio:.1%} of MLP neurons in two steps beats one step, at equal re-distillation steps",
                           "Table 4: gradual pruning with re-distillation between steps beats one-shot", one_shot,
                           ("gradual", gradual), "positive", note=note))  # fmt: skip
    if "calibration" in study.rows:
        out += _calibration_findings(study, values, compare, stages)
    if "quantization" in study.rows:
        out += _quantization_findings(study, values, compare)
    if "kv_prune" in study.rows:
        ratios = [s["prune"]["prefill_ratio"] for s in stages.get("kv", [])]
        longest = max(ratios[0], key=int) if ratios else None
        speed = f"; prefill at {longest} tokens {mean([1 / r[longest] for r in ratios]):.2f}x as fast" if longest else ""
        out.append(compare("kv_prune", f"Pruning {study.kv_fraction:.0%} of the key/value groups, then KD, keeps the AUC within {study.size_margin:g}",
                           "Table 5: attention pruning with KD keeps quality and speeds up prefill", ("unpruned", values("kv", student)),
                           ("KV-pruned + KD", values("kv", pruned)), "equivalent", study.size_margin, f"{steps} re-distillation steps{speed}"))  # fmt: skip
    return out


def _calibration_findings(study: StudyConfig, values: Any, compare: Any, stages: dict[str, list[dict[str, dict[str, Any]]]]) -> list[Finding]:
    """calibration: the one-shot pruned student's AUC by calibration set. The note gives each
    arm's mean relative layer error (OSSCAR's objective), each on its own calibration inputs."""
    pruned, ratio = f"{study.student.name}-pruned", study.redistill_ratio
    records, texts = sorted(study.calibration_counts), sorted(study.calibration_text_counts)

    def arm(source: str, count: int) -> tuple[str, list[float]]:
        return f"{'in-domain' if source == 'records' else 'text'} {count}", values(f"calib-{source}-{count}", pruned)

    def objective(source: str, count: int) -> str:
        errors = [s["prune"]["steps"][0]["totals"].get("mlp_relative_error_mean") for s in stages.get(f"calib-{source}-{count}", [])]
        return f"{arm(source, count)[0]} {sum(errors) / len(errors):.4f}" if errors and None not in errors else ""

    note = "mean relative MLP layer error on its own calibration inputs: " + ", ".join(
        filter(None, [objective("records", n) for n in records] + [objective("text", n) for n in texts]))
    paper, out = "Fig. 5: in-domain calibration data beats generic text; a few hundred prompts suffice", []
    head = f"One-shot pruning of {ratio:.1%} of MLP neurons"
    for count in sorted(set(records) & set(texts)):
        out.append(compare("calibration", f"{head}: in-domain calibration beats generic text at {count} prompts", paper,
                           arm("text", count), arm("records", count), "positive", note=note))  # fmt: skip
    out.append(compare("calibration", f"{head}: {records[-1]} in-domain prompts beat {records[0]}", paper,
                       arm("records", records[0]), arm("records", records[-1]), "positive", note=note))  # fmt: skip
    out.append(compare("calibration", f"{head}: {texts[-1]} generic texts do not beat {records[-1]} in-domain prompts", paper,
                       arm("records", records[-1]), arm("text", texts[-1]), "negative", note=note))  # fmt: skip
    return out


def _quantization_findings(study: StudyConfig, values: Any, compare: Any) -> list[Finding]:
    """quantization: FP8 and W8A8 (the same at every group size: read from the first arm) vs
    unquantized; per group size, W4A16 GPTQ vs unquantized and QuantEase vs GPTQ."""
    student, out = study.student.name, []
    paper = "Table 7: FP8 and W8A8 are near-lossless; W4A16 GPTQ loses AUC and QuantEase recovers part of it"
    first = f"quant-g{study.quant_group_sizes[0]}"
    unquantized = ("unquantized", values(first, student))
    for scheme, label in (("fp8_dynamic", "FP8"), ("w8a8_int", "W8A8-INT")):
        out.append(compare("quantization", f"{label} keeps the AUC within {study.quant_margin:g}", paper, unquantized,
                           (label, values(first, f"{student}-{scheme}")), "equivalent", study.quant_margin))  # fmt: skip
    for group in study.quant_group_sizes:
        arm = f"quant-g{group}"
        gptq = (f"W4A16 GPTQ g{group}", values(arm, f"{student}-w4a16_gptq"))
        quantease = (f"W4A16 QuantEase g{group}", values(arm, f"{student}-w4a16_quantease"))
        out.append(compare("quantization", f"W4A16 GPTQ in groups of {group} lowers the AUC", paper, ("unquantized", values(arm, student)), gptq, "negative"))
        out.append(compare("quantization", f"QuantEase beats GPTQ at W4A16 in groups of {group}", paper, gptq, quantease, "positive"))
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
