"""The study's rows about compressing the student: re-training after pruning (KD vs SFT, gradual
vs one-shot, KV-group pruning), calibration data, and quantization.

Every arm trains the same student as the rest of the study (from the store) and differs in
its ``prune`` or ``quantize`` section alone; re-trained arms get equal steps. See
:mod:`recslm.reproduce.study` for how arms, seeds and findings fit together.
"""

from __future__ import annotations

import json
from statistics import fmean as mean
from typing import Any

from recslm.reproduce.findings import Finding

from recslm.reproduce.study_config import StudyConfig

QUANT_SCHEMES = ("fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease")
Stages = dict[str, list[dict[str, dict[str, Any]]]]  # arm -> per seed {stage: metrics}


def compression_arms(study: StudyConfig, student: str) -> dict[str, list[str]]:
    """The arms of the compression rows asked for: name -> overrides (``student`` is the students override)."""
    out: dict[str, list[str]] = {}
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


def compression_findings(study: StudyConfig, values: Any, compare: Any, stages: Stages) -> list[Finding]:
    """redistill_loss, gradual, calibration, quantization and kv_prune, from the arms' values
    (``values(arm, model, field)``) and stage metrics; ``compare`` builds one finding."""
    student, pruned, out = study.student.name, f"{study.student.name}-pruned", []
    ratio, steps = study.redistill_ratio, study.redistill_steps

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


def _calibration_findings(study: StudyConfig, values: Any, compare: Any, stages: Stages) -> list[Finding]:
    """calibration: the one-shot pruned student's AUC by calibration set. The note gives each
    arm's mean relative layer error (OSSCAR's objective), each on its own calibration inputs."""
    pruned, ratio = f"{study.student.name}-pruned", study.redistill_ratio
    records, texts = sorted(study.calibration_counts), sorted(study.calibration_text_counts)

    def arm(source: str, count: int) -> tuple[str, list[float]]:
        return f"{'in-domain' if source == 'records' else 'text'} {count}", values(f"calib-{source}-{count}", pruned)

    def objective(source: str, count: int) -> str:
        errors = [s["prune"]["steps"][0]["totals"].get("mlp_relative_error_mean") for s in stages.get(f"calib-{source}-{count}", [])]
        return f"{arm(source, count)[0]} {mean(errors):.2e}" if errors and None not in errors else ""

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
