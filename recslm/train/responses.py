"""The teacher and student stages of the generative task (``data.source: reviews``).

The same stages as ranking, other bodies: the teacher is built from ``teacher.arch`` (or
loaded) and trained with cross-entropy on whole reference responses; a student runs the
``distill.phases`` through :func:`recslm.train.generative.distill_generative_phases`
(SFT, forward / reverse KL, JSD(beta), on-policy with ``on_policy_fraction``), or, as the
SFT baseline, the same phases with cross-entropy only. With ``train.eval_steps`` each run
scores the val split's response loss as it trains (``val_loss`` curves), keeps the best
checkpoint on it and stops early: the generative task decides on val loss, as ranking
decides on val AUC.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from recslm.config import DistillConfig, StudentSpec, TeacherConfig, TrainConfig
from recslm.data.build import tokenizer_path
from recslm.data.generation_artifact import load_generation_split
from recslm.data.tokenizer import load_tokenizer, same_vocabulary
from recslm.errors import TokenizerError
from recslm.models.factory import build_model, describe, directory_bytes, load_model, save_model
from recslm.models.placement import load_placed
from recslm.train.generative import ResponseValidation, distill_generative_phases, response_loss, train_response_model
from recslm.train.runner import LogFn, StepFn
from recslm.train.student import check_student_source, sft_phases


def validation_for(data_dir: Path, tokenizer: Any, cfg: TrainConfig | None, seed: int) -> ResponseValidation | None:
    """The val split's response loss as ``cfg`` asks for it (``eval_groups`` records), or None."""
    if cfg is None or not cfg.eval_steps:
        return None
    return ResponseValidation(load_generation_split(data_dir, "val"), tokenizer, max_records=cfg.eval_groups, seed=seed)


def make_response_teacher(
    cfg: TeacherConfig, data_dir: Path, out_dir: Path, checkpoint_dir: Path, *, seed: int,
    on_log: LogFn | None = None, on_step: StepFn | None = None, deepspeed: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write the generative teacher to ``out_dir/model``; return its metrics (val loss on the whole val split)."""
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    metrics: dict[str, Any] = {"task": "generative"}
    if cfg.path is not None:
        if not same_vocabulary(load_tokenizer(cfg.path, cfg.trust_remote_code), tokenizer):
            raise TokenizerError(f"teacher.path {cfg.path}: its tokenizer differs from the data stage's; set data.tokenizer.path to the teacher's directory")
        model = load_model(cfg.path, cfg.trust_remote_code)
        metrics["loaded_from"] = str(cfg.path)
    else:
        model = build_model(cfg.arch, tokenizer, seed)
        report = train_response_model(
            model, tokenizer, load_generation_split(data_dir, "train"), cfg.train, checkpoint_dir, seed=seed,
            on_log=on_log, on_step=on_step, deepspeed=deepspeed, validation=validation_for(data_dir, tokenizer, cfg.train, seed),
        )  # fmt: skip
        metrics.update(report.stage_metrics())
    save_model(model, tokenizer, out_dir / "model")
    metrics.update(val_loss=response_loss(model, tokenizer, load_generation_split(data_dir, "val")), bytes=directory_bytes(out_dir / "model"), **describe(model))
    return metrics


def make_response_student(
    spec: StudentSpec, cfg: DistillConfig, role: str, data_dir: Path, teacher_dir: Path | None, out_dir: Path, work_dir: Path, *,
    seed: int, deepspeed: dict[str, Any] | None = None, trust_remote_code: bool = False,
    on_log: LogFn | None = None, on_step: StepFn | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Distill (or, for the SFT baseline, fine-tune) one generative student into ``out_dir/model``; return its metrics."""
    check_student_source(spec, data_dir, trust_remote_code)
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    student = build_model(spec.arch, tokenizer, seed) if spec.arch is not None else load_model(spec.path, trust_remote_code)
    phases = sft_phases(cfg) if role == "sft_baseline" else cfg.phases
    teacher = None
    if any(p.loss != "sft" for p in phases):
        if teacher_dir is None:
            raise ValueError(f"student {spec.name}: its phases distil from the teacher, but no teacher artifact was given")
        teacher = load_placed(teacher_dir / "model", trust_remote_code)
    validation = validation_for(data_dir, tokenizer, next((p.train for p in phases if p.train.eval_steps), None), seed)
    reports = distill_generative_phases(
        student, teacher, tokenizer, load_generation_split(data_dir, "train"), phases, output_dir=work_dir, seed=seed,
        beta=cfg.beta, temperature=cfg.temperature, sampling=cfg.sampling, kd_weight=cfg.kd_weight, ce_weight=cfg.ce_weight,
        on_log=on_log, on_step=on_step, deepspeed=deepspeed, validation=validation,
    )  # fmt: skip
    save_model(student, tokenizer, out_dir / "model")
    wall = sum(r.wall_s for r in reports)
    sampling = sum(r.sampling_s for r in reports)
    return {
        "task": "generative",
        "role": role,
        "student": spec.name,
        "teacher_logits": "online" if teacher is not None else "none",
        "phases": [asdict(r) for r in reports],
        "train_wall_s": round(wall, 2),
        "sampling_s": round(sampling, 2),
        "sampling_share": round(sampling / wall, 4) if wall > 0 else 0.0,  # on-policy cost: the share of training spent writing samples
        "train_loss": reports[-1].train_loss,
        "bytes": directory_bytes(out_dir / "model"),
        **describe(student),
    }
