"""One student built or loaded, distilled and saved; the teacher's top-k computed once.

What :mod:`recslm.stages.distill` and :mod:`recslm.stages.teacher_logits` run: both read the
data and teacher artifacts from folders and write a standard Hugging Face model directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from recslm.config import DistillConfig, DistillPhase, StudentSpec
from recslm.data.build import load_split, tokenizer_path
from recslm.data.tokenizer import load_tokenizer, same_vocabulary
from recslm.errors import TokenizerError
from recslm.models.factory import build_model, describe, directory_bytes, load_model, save_model
from recslm.models.placement import load_placed
from recslm.models.prefix import make_groups
from recslm.progress import counter
from recslm.models.vocabulary import check_vocabulary
from recslm.train.distill import distill_student
from recslm.train.runner import LogFn, StepFn, Validation
from recslm.train.teacher_topk import FILE as TOPK_FILE
from recslm.train.teacher_topk import TopkStore, compute_teacher_topk

Role = Literal["student", "sft_baseline"]


def check_student_source(spec: StudentSpec, data_dir: Path, trust_remote_code: bool = False) -> None:
    """A student loaded from a directory must use the data's (= the teacher's) tokenizer.

    Cheap (reads tokenizer files only), so the flow runs it for every student right after
    the data stage, before any model trains.
    """
    if spec.path is None:
        return
    own = load_tokenizer(spec.path, trust_remote_code)
    if not same_vocabulary(own, load_tokenizer(tokenizer_path(data_dir))):
        raise TokenizerError(
            f"students[{spec.name}].path {spec.path}: its tokenizer differs from the teacher's "
            f"(the data stage's, {tokenizer_path(data_dir)}); teacher and student must share one vocabulary"
        )


def sft_phases(cfg: DistillConfig) -> list[DistillPhase]:
    """The SFT baseline: the same phases and budget as distillation, cross-entropy only."""
    return [phase.model_copy(update={"loss": "sft", "on_policy_fraction": 0.0}) for phase in cfg.phases]


def make_student(
    spec: StudentSpec,
    cfg: DistillConfig,
    role: Role,
    data_dir: Path,
    teacher_dir: Path | None,
    out_dir: Path,
    work_dir: Path,
    *,
    seed: int,
    topk_dir: Path | None = None,
    deepspeed: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    on_log: LogFn | None = None,
    on_step: StepFn | None = None,
) -> dict[str, Any]:
    """Distill (or, for the SFT baseline, fine-tune) one student into ``out_dir/model``; return its metrics."""
    check_student_source(spec, data_dir, trust_remote_code)
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    student = build_model(spec.arch, tokenizer, seed) if spec.arch is not None else load_model(spec.path, trust_remote_code)
    phases = sft_phases(cfg) if role == "sft_baseline" else cfg.phases
    needs_teacher = any(p.loss != "sft" for p in phases)
    groups = make_groups(load_split(data_dir, "train"), tokenizer)
    teacher = topk = None
    if needs_teacher:
        if teacher_dir is None:
            raise ValueError(f"student {spec.name}: its phases distil from the teacher, but no teacher artifact was given")
        if cfg.teacher_logits == "served":  # the teacher runs elsewhere: never loaded here
            check_vocabulary(student, None, tokenizer)
        else:
            teacher = load_placed(teacher_dir / "model", trust_remote_code)
            check_vocabulary(student, teacher, tokenizer)  # before anything trains, in both teacher modes
        if cfg.teacher_logits in ("topk", "served"):
            topk = TopkStore.load(topk_dir / TOPK_FILE, groups)
            teacher = None  # the stored targets replace it: no teacher forward, no teacher memory
    validation = Validation.for_training(data_dir, tokenizer, next((p.train for p in phases if p.train.eval_steps), None), seed)
    model, reports = distill_student(
        student, teacher, tokenizer, groups, cfg, work_dir,
        seed=seed, phases=phases, topk=topk, deepspeed=deepspeed, on_log=on_log, on_step=on_step, validation=validation,
    )
    save_model(model, tokenizer, out_dir / "model")
    return {
        "role": role,
        "student": spec.name,
        "teacher_logits": cfg.teacher_logits if needs_teacher else "none",
        "phases": [asdict(r) for r in reports],
        "train_wall_s": round(sum(r.wall_s for r in reports if not r.skipped), 2),
        "train_examples_per_s": reports[-1].examples_per_s,
        "train_loss": reports[-1].train_loss,
        "bytes": directory_bytes(out_dir / "model"),
        **describe(model),
    }


def make_served_topk(
    data_dir: Path, endpoint: str, out_dir: Path, k: int, *, on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The teacher's top-k over the training groups, read from the server at ``endpoint``."""
    from recslm.data.tokenizer import answer_token_ids
    from recslm.train.served_topk import served_teacher_topk

    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    groups = make_groups(load_split(data_dir, "train"), tokenizer)
    tick = counter(on_progress, len(groups))
    start = time.perf_counter()
    store = served_teacher_topk(endpoint, groups, k, answer_token_ids(tokenizer)[1], on_groups=tick)
    return {**_publish_topk(store, out_dir, len(groups), time.perf_counter() - start), "served_by": endpoint}


def make_teacher_topk(
    data_dir: Path,
    teacher_dir: Path,
    out_dir: Path,
    k: int,
    *,
    groups_per_batch: int = 8,
    trust_remote_code: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Compute the teacher's top-k log-probs over the training groups into ``out_dir``."""
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    teacher = load_placed(teacher_dir / "model", trust_remote_code)
    groups = make_groups(load_split(data_dir, "train"), tokenizer)
    tick = counter(on_progress, len(groups))

    start = time.perf_counter()
    store = compute_teacher_topk(teacher, groups, tokenizer.pad_token_id, k, groups_per_batch=groups_per_batch, on_groups=tick, vocab_size=len(tokenizer))
    return _publish_topk(store, out_dir, len(groups), time.perf_counter() - start)


def _publish_topk(store: TopkStore, out_dir: Path, groups: int, wall_s: float) -> dict[str, Any]:
    """Write the top-k store into ``out_dir``; its metrics, however it was computed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store.save(out_dir / TOPK_FILE)
    rows = sum(int(store.tensors[f"{p}_ids"].shape[0]) for p in ("answer", "prefix", "suffix"))
    return {"k": store.k, "groups": groups, "rows": rows, "bytes": (out_dir / TOPK_FILE).stat().st_size, "wall_s": round(wall_s, 2)}
