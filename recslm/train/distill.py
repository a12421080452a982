"""White-box distillation of a ranking teacher into a student (paper §3, §5.1, §A.1).

The predictive recipe, per batch of member groups (weights from ``DistillConfig``):

    loss = kd_weight     * D(teacher || student) on the answer token (full vocabulary)
         + ce_weight     * cross-entropy of the student's answer token to the label
         + prompt_weight * D over every prompt token, averaged over their count

with D the phase's divergence (forward KL by default; reverse KL; JSD(beta)). A phase
with ``loss: sft`` is the cross-entropy-only baseline. Teacher and student run the same
prefix-shared forward (``recslm.models.prefix.shared_forward``), so the shared
prefix is computed once per group for both; the prompt term goes through the chunked
loss, so B×T×V logits are never materialized. The teacher is either run online in
every step or replaced by stored top-k log-probs (``recslm.train.teacher_topk``).

Phases run one after another, each from the previous phase's weights, each in its own
checkpoint folder; a finished phase leaves its weights and report behind, so a stage
killed in phase 2 resumes in phase 2 (from its last checkpoint), not from scratch.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from recslm.config import DistillConfig, DistillPhase
from recslm.data.tokenizer import answer_token_ids
from recslm.errors import ConfigError, TokenizerError
from recslm.jsonfile import write_json
from recslm.models.prefix import Group, shared_forward
from recslm.models.placement import follow, to_device
from recslm.models.vocabulary import check_vocabulary, tokenizer_logits
from recslm.train.deepspeed import load_trained_model
from recslm.train.losses import distill_loss, distill_loss_topk, token_divergence, topk_divergence
from recslm.train.runner import ListDataset, LogFn, ResumingTrainer, StepFn, TrainReport, Validation, callbacks, collate_list, fit, phase_log, training_arguments
from recslm.train.sft import answer_targets
from recslm.train.teacher_topk import TopkStore, TopkTargets


@dataclass
class DistillItem:
    """One training item: a member group, and the teacher's stored top-k for it (top-k mode)."""

    group: Group
    targets: TopkTargets | None = None
    labeled: bool = True  # False: a group outside distill.label_fraction's subset, trained by KD alone


@dataclass
class RecipeWeights:
    kd: float
    ce: float
    prompt: float

    @classmethod
    def of(cls, cfg: DistillConfig, phase: DistillPhase) -> RecipeWeights:
        """The phase's weights: the recipe for a divergence, cross-entropy alone for ``sft``."""
        if phase.loss == "sft":
            return cls(kd=0.0, ce=1.0, prompt=0.0)
        return cls(kd=cfg.kd_weight, ce=cfg.ce_weight, prompt=cfg.prompt_weight)


def recipe_loss(
    student: PreTrainedModel,
    teacher: PreTrainedModel | None,
    items: Sequence[DistillItem],
    *,
    kind: str,
    weights: RecipeWeights,
    answer_ids: dict[int, int],
    pad_id: int,
    beta: float,
    temperature: float,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The recipe's loss on a batch and its parts (answer KD, answer CE, prompt KD), unweighted.

    Everything meets on the student's device: the teacher follows the student there (once;
    then it is a no-op), stored top-k targets are moved there with the batch. The parts are
    detached tensors, not floats: turning each into a Python number would wait for the GPU
    three times a step; the trainer converts them when it logs. ``vocab_size`` (the
    tokenizer's length) drops padded output rows, which may differ between the models."""
    groups = [it.group for it in items]
    fwd = shared_forward(student, groups, pad_id)
    head = tokenizer_logits(student.get_output_embeddings(), vocab_size)
    answer_logits = head(fwd.answer_rows()).float()
    device = answer_logits.device
    ce = labeled_cross_entropy(answer_logits, answer_targets(groups, answer_ids, device), items)
    parts: dict[str, torch.Tensor] = {"ce": ce.detach()}
    loss = weights.ce * ce
    if weights.kd == 0.0 and weights.prompt == 0.0:
        return loss, parts
    stored = to_device(TopkTargets.concat([it.targets for it in items]), device) if items[0].targets is not None else None
    if stored is None:
        if teacher is None:
            raise ConfigError("distillation needs a teacher model or stored teacher top-k targets")
        follow(teacher, student)
        with torch.no_grad():
            t_fwd = shared_forward(teacher, groups, pad_id)
        t_head = tokenizer_logits(teacher.get_output_embeddings(), vocab_size)
    if weights.kd:
        if stored is None:
            with torch.no_grad():
                t_logits = t_head(t_fwd.answer_rows()).float()
            kd = token_divergence(answer_logits, t_logits, kind, beta=beta, temperature=temperature).mean()
        else:
            kd = topk_divergence(answer_logits, stored.answer_ids, stored.answer_logprobs, kind, beta=beta, temperature=temperature).mean()
        parts["kd"] = kd.detach()
        loss = loss + weights.kd * kd
    if weights.prompt:
        if stored is None:
            prompt = distill_loss(fwd.prompt_rows(), t_fwd.prompt_rows(), head, t_head, kind=kind, beta=beta, temperature=temperature)
        else:
            ids, lps = stored.prompt()
            prompt = distill_loss_topk(fwd.prompt_rows(), head, ids, lps, kind=kind, beta=beta, temperature=temperature)
        parts["prompt_kd"] = prompt.detach()
        loss = loss + weights.prompt * prompt
    return loss, parts


def labeled_cross_entropy(answer_logits: torch.Tensor, targets: torch.Tensor, items: Sequence[DistillItem]) -> torch.Tensor:
    """Cross-entropy to the label, averaged over the candidates of labeled groups only; zero
    (still on the graph) when the batch holds none. With every group labeled, the plain mean."""
    if all(it.labeled for it in items):
        return F.cross_entropy(answer_logits, targets)
    mask = torch.tensor([it.labeled for it in items for _ in it.group.labels], device=answer_logits.device)
    per = F.cross_entropy(answer_logits, targets, reduction="none")
    return (per * mask).sum() / mask.sum().clamp(min=1)


def labeled_groups(groups: Sequence[Group], fraction: float) -> list[bool]:
    """Which groups' labels are seen under ``distill.label_fraction``: a group is labeled when a
    hash of its member, task and prompt falls below ``fraction``. Fixed by the data alone, so
    every arm, seed and student (KD or SFT) sees the same labeled subset."""
    if fraction >= 1:
        return [True] * len(groups)

    def position(g: Group) -> float:
        digest = hashlib.sha256(f"{g.member_id}\x00{g.task}\x00{','.join(map(str, g.prefix_ids))}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return [position(g) < fraction for g in groups]


class DistillTrainer(ResumingTrainer):
    """Trainer whose loss is :func:`recipe_loss`; logs the loss parts beside the total."""

    def __init__(
        self, *args: Any, teacher: PreTrainedModel | None, kind: str, weights: RecipeWeights,
        answer_ids: dict[int, int], pad_id: int, beta: float, temperature: float, vocab_size: int | None = None, **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        self.recipe = dict(kind=kind, weights=weights, answer_ids=answer_ids, pad_id=pad_id, beta=beta, temperature=temperature, vocab_size=vocab_size)
        self._parts: dict[str, list[torch.Tensor]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        # the plain model, not a DeepSpeed engine: see AnswerTokenTrainer.compute_loss
        loss, parts = recipe_loss(self.accelerator.unwrap_model(model), self.teacher, inputs["items"], **self.recipe)
        for name, value in parts.items():
            self._parts[name].append(value)
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:  # noqa: D102
        for name, values in self._parts.items():
            if values:
                logs[f"loss_{name}"] = float(torch.stack(values).float().mean())  # one device sync per log, not per step
        self._parts.clear()
        super().log(logs, *args, **kwargs)


@dataclass
class PhaseReport:
    phase: int
    loss: str
    steps: int
    train_loss: float
    wall_s: float
    resumed_from: str | None
    examples_per_s: float
    skipped: bool = False
    best_step: int | None = None  # the checkpoint kept, chosen on val (None: no validation)
    best_val: float | None = None  # its value of train.best_metric
    stopped_early: bool = False
    groups: int | None = None  # the training groups the phase drew batches from (fewer than the data's with distill.label_fraction)


def _items(groups: Sequence[Group], topk: TopkStore | None, labeled: Sequence[bool]) -> list[DistillItem]:
    if topk is None:
        return [DistillItem(g, labeled=lab) for g, lab in zip(groups, labeled)]
    if len(topk) != len(groups):
        raise ConfigError(f"teacher top-k holds {len(topk)} groups, the training data has {len(groups)}")
    return [DistillItem(g, topk.targets(i), labeled=lab) for i, (g, lab) in enumerate(zip(groups, labeled))]


def phase_items(items: Sequence[DistillItem], phase: DistillPhase, unlabeled: str) -> list[DistillItem]:
    """What a phase trains on: every item, or (SFT, or ``unlabeled: drop``) the labeled ones."""
    if phase.loss == "sft" or unlabeled == "drop":
        return [it for it in items if it.labeled]
    return list(items)


def distill_student(
    student: PreTrainedModel,
    teacher: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Group],
    cfg: DistillConfig,
    work_dir: Path,
    *,
    seed: int,
    phases: Sequence[DistillPhase] | None = None,
    topk: TopkStore | None = None,
    deepspeed: dict[str, Any] | None = None,
    on_log: LogFn | None = None,
    on_step: StepFn | None = None,
    validation: Validation | None = None,
) -> tuple[PreTrainedModel, list[PhaseReport]]:
    """Run the distillation phases on ``student``; return the trained model and a report per phase.

    ``phases`` defaults to ``cfg.phases`` (the SFT baseline passes its own). Each phase
    checkpoints under ``work_dir/phase-<i>`` and, when finished, saves its weights to
    ``phase-<i>/final`` with ``report.json``; a restarted run skips finished phases.
    """
    phases = list(phases if phases is not None else cfg.phases)
    for i, phase in enumerate(phases):
        if phase.on_policy_fraction > 0:
            raise ConfigError(
                f"distill.phases[{i}].on_policy_fraction={phase.on_policy_fraction}: on-policy sampling needs "
                "generative data; ranking answers are a single token (set it to 0)"
            )
    needs_teacher = any(p.loss != "sft" for p in phases)
    check_vocabulary(student, teacher if needs_teacher else None, tokenizer)
    items = _items(groups, topk if needs_teacher else None, labeled_groups(groups, cfg.label_fraction))
    answer_ids = answer_token_ids(tokenizer)
    reports: list[PhaseReport] = []
    for i, phase in enumerate(phases):
        phase_dir = work_dir / f"phase-{i}"
        final = phase_dir / "final"
        if (phase_dir / "report.json").is_file():
            student = AutoModelForCausalLM.from_pretrained(final)
            reports.append(PhaseReport(**{**json.loads((phase_dir / "report.json").read_text()), "skipped": True}))
            continue
        phase_dir.mkdir(parents=True, exist_ok=True)
        trained = phase_items(items, phase, cfg.unlabeled)
        if not trained:
            raise ConfigError(f"distill.label_fraction={cfg.label_fraction}: none of the {len(items)} training groups is labeled; raise it")
        trainer = DistillTrainer(
            model=student,
            args=training_arguments(phase.train, phase_dir, n_items=len(trained), seed=seed + i, deepspeed=deepspeed),
            train_dataset=ListDataset(trained),
            data_collator=collate_list,
            processing_class=tokenizer,
            callbacks=callbacks(phase_log(on_log, i), on_step, phase.train),
            validation=validation if phase.train.eval_steps else None,
            teacher=teacher if (needs_teacher and topk is None) else None,
            kind=phase.loss if phase.loss != "sft" else "forward_kl",
            weights=RecipeWeights.of(cfg, phase),
            answer_ids=answer_ids,
            pad_id=tokenizer.pad_token_id,
            beta=cfg.beta,
            temperature=cfg.temperature,
            vocab_size=len(tokenizer),
        )
        report: TrainReport = fit(trainer, phase_dir, examples=sum(len(it.group.labels) for it in trained), items=len(trained))
        # every rank calls save_model: under ZeRO-3 it gathers the partitioned weights
        # (rank 0 writes). Reloading from disk gives the next phase, and the caller, a plain
        # model whatever DeepSpeed did to the one in memory.
        trainer.save_model(str(final))
        trainer.accelerator.wait_for_everyone()
        student = load_trained_model(final)  # plain, also after ZeRO-3
        out = PhaseReport(i, phase.loss, report.steps, report.train_loss, round(report.wall_s, 2), report.resumed_from, round(report.examples_per_s, 2),
                          best_step=report.best_step, best_val=report.best_metric, stopped_early=report.stopped_early, groups=len(trained))  # fmt: skip
        if trainer.is_world_process_zero():
            write_json(phase_dir / "report.json", asdict(out), indent=None)
        reports.append(out)
    return student, reports
