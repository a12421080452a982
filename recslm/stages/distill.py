"""The distill stage: one student distilled from the teacher (role ``student``), or fine-tuned
with cross-entropy only on the same phases and budget (role ``sft_baseline``, for comparison)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from recslm.config import StudentSpec
from recslm.errors import ConfigError
from recslm.progress import progress_bar
from recslm.stages.base import Stage, StageContext, dump, without_later_defaults
from recslm.store import ArtifactRef

Role = Literal["student", "sft_baseline"]


def key(config: Any, student: str, role: Role) -> Any:
    """What decides a student's weights, and nothing else (so unrelated edits keep the cache)."""
    from recslm.train.student import sft_phases  # pydantic only

    spec = config.student(student)
    described = dump(spec)
    if spec.path is not None:  # initialized from a folder: its bytes decide the result, not its name
        from recslm.store.digest import folder_digest

        described["digest"] = folder_digest(spec.path, f"students[{student}].path")
    labels = config.distill.label_fraction
    if role == "sft_baseline":
        phases = [dump(p) for p in sft_phases(config.distill)]
        out = {"student": described, "role": role, "phases": phases, "seed": config.student_seed()}
        return out if labels == 1 else {**out, "label_fraction": labels}  # all labels: keys from before the setting hold
    distill = without_later_defaults(config.distill, ("label_fraction", "unlabeled"))
    for name in ("sft_baseline", "seed", "teacher_url"):  # the targets decide, not their address
        distill.pop(name, None)
    if config.distill.teacher_logits == "online":
        distill.pop("topk")
    return {"student": described, "role": role, "distill": distill, "seed": config.student_seed()}


def check_student_paths(config: Any) -> None:
    """Every ``students[i].path`` is a Hugging Face model folder: checked when the run starts,
    before the data stage, so a typo costs seconds and names the field."""
    for i, spec in enumerate(config.students):
        if spec.path is None:
            continue
        where = f"students[{i}].path ({spec.name})"
        if not Path(spec.path).is_dir():
            raise ConfigError(f"{where}: {spec.path} is not a directory; expected a Hugging Face model folder (config.json, *.safetensors, tokenizer files)")
        if not (Path(spec.path) / "config.json").is_file():
            raise ConfigError(f"{where}: {spec.path} has no config.json; expected a Hugging Face model folder")


def check_sources(config: Any, data_dir: Path) -> None:
    """Fail on a student loaded from a folder whose tokenizer differs from the data's (the
    teacher's). Cheap (tokenizer files only): the flow runs it before the teacher trains."""
    if not any(spec.path is not None for spec in config.students):
        return
    from recslm.train.student import check_student_source  # transformers: only when a student has a path

    for spec in config.students:
        check_student_source(spec, data_dir, config.teacher.trust_remote_code)


def uses(config: Any, student: str, role: Role) -> set[str]:
    """The SFT baseline never sees the teacher, so a new teacher does not retrain it."""
    return {"data"} if role == "sft_baseline" else {"data", "teacher", "teacher_logits"}


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], student: str, role: Role) -> dict[str, Any]:
    from recslm.train.deepspeed import deepspeed_config  # torch, Trainer: only when the stage runs
    from recslm.train.student import make_student

    spec = config.student(student)
    topk = inputs.get("teacher_logits")
    teacher = inputs.get("teacher")
    if config.task == "generative":
        from recslm.train.responses import make_response_student

        with progress_bar(f"{spec.model_name(role)} steps") as on_step:
            return make_response_student(
                spec, config.distill, role, inputs["data"].path, teacher.path if teacher is not None else None, ctx.out, ctx.work / "checkpoints",
                seed=config.student_seed(), deepspeed=deepspeed_config(config.distill.deepspeed, config.distill.phases[0].train),
                trust_remote_code=config.teacher.trust_remote_code, on_log=ctx.log_curve, on_step=on_step,
            )  # fmt: skip
    with progress_bar(f"{spec.model_name(role)} steps") as on_step:
        return make_student(
            spec, config.distill, role, inputs["data"].path, teacher.path if teacher is not None else None, ctx.out, ctx.work / "checkpoints",
            seed=config.student_seed(), topk_dir=topk.path if topk is not None else None,
            deepspeed=deepspeed_config(config.distill.deepspeed, config.distill.phases[0].train),
            trust_remote_code=config.teacher.trust_remote_code, on_log=ctx.log_curve, on_step=on_step,
        )  # fmt: skip


STAGE = Stage("distill", key, body, uses=uses, label=lambda student, role: f"distill-{StudentSpec.model_name_of(student, role)}")
