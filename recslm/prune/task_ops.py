"""What pruning needs from the task: calibration inputs, a quality read on val, and re-distillation.

Pruning itself (OSSCAR on layer inputs, slicing) does not care what the model is for; the
three things around it do. :class:`RankingOps`: calibration on in-domain prompts, val AUC,
re-distillation with the answer-token recipe (or, with ``prune.redistill.loss: sft``, cross-entropy
alone: the paper's SFT arm after pruning). :class:`GenerativeOps`: calibration on
training prompts followed by their reference responses (the activations a writing model
sees), val response loss, re-distillation with forward KL on whole responses. Both
re-distill from the *unpruned* model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from recslm.config import DistillConfig, DistillPhase, EvaluateConfig, PruneConfig
from recslm.data.build import load_split, tokenizer_path
from recslm.train.runner import LogFn, StepFn


class TaskOps(Protocol):
    """The task-specific steps of :func:`recslm.prune.gradual.prune_student`."""

    def calibration(self) -> list[torch.Tensor]: ...

    def quality(self, model_dir: Path) -> dict[str, Any]: ...

    def redistill(self, model: Any, original: Any, folder: Path, *, seed: int, on_log: LogFn | None, on_step: StepFn | None) -> tuple[Any, int]: ...


class RankingOps:
    """Calibrate on in-domain prompts; judge by val AUC; re-distill with the answer-token recipe."""

    def __init__(self, data_dir: Path, tokenizer: Any, prune: PruneConfig, distill: DistillConfig, evaluate: EvaluateConfig, seed: int):
        from recslm.models.prefix import make_groups
        from recslm.train.runner import Validation

        self.data_dir, self.tokenizer, self.prune, self.distill, self.evaluate, self.seed = data_dir, tokenizer, prune, distill, evaluate, seed
        self.train = load_split(data_dir, "train")
        # per-step AUCs are a diagnostic read while tuning the schedule: on val, so test stays
        # scored once (by the evaluate stage, on the final model)
        self.val = load_split(data_dir, "val")
        self.groups = make_groups(self.train, tokenizer) if prune.redistill is not None else []
        self.validation = Validation.for_training(data_dir, tokenizer, prune.redistill, seed)

    def calibration(self) -> list[torch.Tensor]:
        from recslm.data.calibration import configured_inputs

        return configured_inputs(self.prune.calibration, self.train, self.tokenizer, self.seed)

    def quality(self, model_dir: Path) -> dict[str, Any]:
        from recslm.evaluate.evaluate import evaluate_records

        m = evaluate_records(model_dir, self.val, prefix_sharing=self.evaluate.prefix_sharing, groups_per_batch=self.evaluate.groups_per_batch,
                             data_tokenizer_dir=tokenizer_path(self.data_dir))  # fmt: skip
        return {"auc": m["auc"], "auc_mean": m["auc_mean"], "params": m["params"]}

    def redistill(self, model: Any, original: Any, folder: Path, *, seed: int, on_log: LogFn | None, on_step: StepFn | None) -> tuple[Any, int]:
        from recslm.train.distill import distill_student

        phase = DistillPhase(loss=self.prune.redistill.loss, train=self.prune.redistill.train())
        model, phases = distill_student(model, original, self.tokenizer, self.groups, self.distill, folder,
                                        seed=seed, phases=[phase], on_log=on_log, on_step=on_step, validation=self.validation)  # fmt: skip
        return model, sum(p.steps for p in phases)


class GenerativeOps:
    """Calibrate on prompt + reference response; judge by val response loss; re-distill with forward KL on responses."""

    def __init__(self, data_dir: Path, tokenizer: Any, prune: PruneConfig, distill: DistillConfig, evaluate: EvaluateConfig, seed: int):
        from recslm.data.generation_artifact import load_generation_split
        from recslm.train.responses import validation_for

        self.data_dir, self.tokenizer, self.prune, self.distill, self.seed = data_dir, tokenizer, prune, distill, seed
        self.train = load_generation_split(data_dir, "train")
        self.val = load_generation_split(data_dir, "val")
        self.validation = validation_for(data_dir, tokenizer, prune.redistill, seed)

    def calibration(self) -> list[torch.Tensor]:
        from recslm.data.calibration import artifact_calibration_inputs

        return artifact_calibration_inputs(self.prune.calibration, self.data_dir, self.tokenizer, self.seed, task="generative")

    def quality(self, model_dir: Path) -> dict[str, Any]:
        from recslm.models.factory import count_parameters
        from recslm.models.placement import load_placed
        from recslm.train.generative import response_loss

        model = load_placed(model_dir)
        return {"val_loss": response_loss(model, self.tokenizer, self.val), "params": count_parameters(model)}

    def redistill(self, model: Any, original: Any, folder: Path, *, seed: int, on_log: LogFn | None, on_step: StepFn | None) -> tuple[Any, int]:
        from recslm.train.generative import distill_generative_phases

        phase = DistillPhase(loss=self.prune.redistill.loss, train=self.prune.redistill.train())
        reports = distill_generative_phases(
            model, original, self.tokenizer, self.train, [phase], output_dir=folder, seed=seed, beta=self.distill.beta,
            temperature=self.distill.temperature, kd_weight=self.distill.kd_weight, ce_weight=self.distill.ce_weight,
            on_log=on_log, on_step=on_step, validation=self.validation,
        )  # fmt: skip
        return model, sum(r.steps for r in reports)


def task_ops(task: str, data_dir: Path, tokenizer: Any, prune: PruneConfig, distill: DistillConfig, evaluate: EvaluateConfig, seed: int) -> TaskOps:
    """The ops of ``task`` (``ranking`` or ``generative``)."""
    ops = GenerativeOps if task == "generative" else RankingOps
    return ops(data_dir, tokenizer, prune, distill, evaluate, seed)
