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

The compression rows' arms and findings (redistill_loss, gradual, calibration, quantization,
kv_prune) are in :mod:`recslm.reproduce.compression`, the serving row's measurements in
:mod:`recslm.reproduce.serving`. The generative rows (``gen_*``, the paper's Table 1) run on their own base, a generative
config (``generative:``), and measure test response loss (:mod:`recslm.reproduce.generative`).
"""

from __future__ import annotations

import json
from statistics import fmean
from typing import Any

from recslm.reproduce.compression import compression_arms, compression_findings
from recslm.reproduce.findings import Direction, Finding, finding
from recslm.reproduce.study_config import StudyConfig

# every arm's run: the study's student alone, no deploy, no registry; select keeps it whatever its AUC
ARM_BASE = ["distill.sft_baseline=false", "prune.enabled=false", "quantize.enabled=false", "serve.enabled=false", "bench.enabled=false", "registry.enabled=false",
            "select.max_auc_drop_pct=100", "select.require_teacher_gate=false"]  # fmt: skip


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
    out.update(compression_arms(study, student))
    return out


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
        teacher_gap = fmean(t - s for t, s in zip(values("labels", "teacher"), sft_subset[1]))
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
    out += compression_findings(study, values, compare, stages or {})
    return out
