"""The profile and prune stages' library side: read a student folder, write a pruned one.

Prune runs the schedule of :mod:`recslm.prune.schedule` on the selected student. Each
step: calibrate and prune layer by layer (:func:`recslm.prune.pruner.prune_step`), save
and score the pruned model on val, re-distill it from the *unpruned* student (ranking: the
distill recipe, forward KL on the answer token + CE + prompt KD; generative: forward KL on
whole responses + CE), score again, and time prefill
at the profile's context lengths. A step that finished is not redone when the stage is
retried (its ``report.json`` and ``final/`` model are reused); an interrupted
re-distillation resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recslm.config import DistillConfig, EvaluateConfig, ProfileConfig, PruneConfig
from recslm.data.build import tokenizer_path
from recslm.data.tokenizer import load_tokenizer
from recslm.errors import ConfigError
from recslm.evaluate.profile import prefill_ms, profile_figure, profile_model
from recslm.jsonfile import write_json
from recslm.models.factory import save_model
from recslm.models.placement import load_placed, load_trainable
from recslm.prune.pruner import LayerRecord, Solver, prune_step
from recslm.prune.schedule import plan, step_keeps
from recslm.prune.task_ops import task_ops
from recslm.train.runner import LogFn, StepFn


def profile_student(model_dir: Path, out_dir: Path, cfg: ProfileConfig) -> dict[str, Any]:
    """Time attention vs MLP per layer at ``cfg.context_lengths``, on the stage's device and in its
    dtype (what serving will see, not the CPU); write profile.json and profile.png."""
    model = load_placed(model_dir)
    result = profile_model(model, cfg.context_lengths, cfg.repeats)
    if not result.context_lengths:
        raise ConfigError(f"profile.context_lengths {cfg.context_lengths}: all exceed the model's max_position_embeddings")
    out_dir.mkdir(parents=True, exist_ok=True)
    profile_figure(result, out_dir / "profile.png", title=f"prefill time per layer ({model_dir.parent.name[:12]})")
    metrics = {**result.dump(), "recommendation": result.recommend(cfg.min_share), "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."), "threads": torch.get_num_threads()}
    (out_dir / "profile.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def targets_for(cfg: PruneConfig, recommendation: dict[str, bool] | None) -> PruneConfig:
    """With ``parts: auto``, drop the targets of the parts the profile says are not worth pruning."""
    if cfg.parts == "config" or recommendation is None:
        return cfg
    keep_mlp, keep_heads = recommendation.get("mlp", True), recommendation.get("heads", True)
    if not keep_mlp and not keep_heads:
        raise ConfigError("prune.parts: auto, and the profile finds neither attention nor MLP above profile.min_share: lower it")
    schedule = [s.model_copy(update={"mlp_fraction": s.mlp_fraction if keep_mlp else 0.0, "heads_fraction": s.heads_fraction if keep_heads else 0.0}) for s in cfg.schedule]
    return cfg.model_copy(update={
        "schedule": schedule,
        "mlp_fraction": cfg.mlp_fraction if keep_mlp else 0.0,
        "heads_fraction": cfg.heads_fraction if keep_heads else 0.0,
    })  # fmt: skip


def _interleaved_prefill(a: torch.nn.Module, b: torch.nn.Module, lengths: list[int], repeats: int, rounds: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Median prefill ms of two models measured in alternation, so load from elsewhere hits both alike."""
    times: dict[str, tuple[list[float], list[float]]] = {str(n): ([], []) for n in lengths}
    for _ in range(rounds):
        for n in lengths:
            times[str(n)][0].append(prefill_ms(a, n, repeats))
            times[str(n)][1].append(prefill_ms(b, n, repeats))
    return ({k: statistics.median(v[0]) for k, v in times.items()}, {k: statistics.median(v[1]) for k, v in times.items()})


def prune_student(
    student_dir: Path,
    data_dir: Path,
    out_dir: Path,
    work_dir: Path,
    *,
    prune: PruneConfig,
    distill: DistillConfig,
    evaluate: EvaluateConfig,
    profile: ProfileConfig,
    recommendation: dict[str, bool] | None,
    seed: int,
    on_log: LogFn | None = None,
    on_step: StepFn | None = None,
    on_layer: Callable[[LayerRecord], None] | None = None,
    task: str = "ranking",
) -> dict[str, Any]:
    """Prune (and re-distill) the student in ``student_dir/model`` into ``out_dir/model``; return the per-step record.
    ``task`` says how calibration, the per-step quality read (on val) and re-distillation go
    (:mod:`recslm.prune.task_ops`)."""
    prune = targets_for(prune, recommendation)
    steps = plan(prune)
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    original = load_placed(student_dir / "model")  # the re-distillation's teacher: read, never trained
    model = load_trainable(student_dir / "model")  # calibration statistics accumulate where its activations are
    ops = task_ops(task, data_dir, tokenizer, prune, distill, evaluate, seed)
    inputs = ops.calibration()
    solver = Solver(prune.method, prune.ridge, prune.refit, prune.local_search_iters)
    mlp_total, kv_total = int(model.config.intermediate_size), int(model.config.num_key_value_heads)
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    lengths = [n for n in profile.context_lengths if not limit or n <= limit]
    reports: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        step_dir = work_dir / f"step-{i}"
        if (step_dir / "report.json").is_file():
            model = load_trainable(step_dir / "final")
            reports.append({**json.loads((step_dir / "report.json").read_text()), "reused": True})
            continue
        started = time.perf_counter()
        keeps = step_keeps(steps, i, mlp_total, kv_total, prune.align)
        result = prune_step(model, inputs, mlp_keep=keeps.mlp, kv_keep=keeps.kv, solver=solver, align=prune.align, on_layer=on_layer)
        save_model(model, tokenizer, step_dir / "pruned")
        report: dict[str, Any] = {
            "step": i, "mlp_fraction": step.mlp_fraction, "heads_fraction": step.heads_fraction,
            "mlp_keep": keeps.mlp, "kv_keep": keeps.kv, **result.dump(), "auc_split": "val", "pruned": ops.quality(step_dir / "pruned"),
        }  # fmt: skip
        final = step_dir / "pruned"
        if prune.redistill is not None:
            log = None if on_log is None else (lambda s, v, i=i: on_log(s, {f"step{i}_{k}": x for k, x in v.items()}))
            model, report["redistill_steps"] = ops.redistill(model, original, step_dir / "redistill", seed=seed + i, on_log=log, on_step=on_step)
            final = step_dir / "final"
            save_model(model, tokenizer, final)
            report["redistilled"] = ops.quality(final)
        else:
            save_model(model, tokenizer, step_dir / "final")
        report["prefill_ms"] = {str(n): prefill_ms(model, n, profile.repeats) for n in lengths}
        report["wall_s"] = round(time.perf_counter() - started, 2)
        write_json(step_dir / "report.json", report)
        reports.append(report)
    save_model(model, tokenizer, out_dir / "model")
    before, after = _interleaved_prefill(original, model, lengths, profile.repeats)
    return {
        "method": prune.method,
        "steps": reports,
        "params_before": reports[0]["params_before"],
        "params_after": reports[-1]["params_after"],
        "config": reports[-1]["config"],
        "prefill_ms_before": before,
        "prefill_ms_after": after,
        "prefill_ratio": {k: after[k] / before[k] for k in before},
    }

