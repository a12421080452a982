"""Generative training: SFT on responses, token-level KD, on-policy sampling, multi-phase schedules.

The pipeline reaches it through ``data.source: reviews`` (the generative task:
:mod:`recslm.train.responses` for the teacher and student stages); ``benchmarks/onpolicy_reviews.py``
calls it directly.

The ranking path trains one answer token; this module trains whole responses
(``GenerationRecord``: a prompt and the text that should follow it).

- **SFT** (the teacher): cross-entropy on the response tokens only. The prompt is input,
  not a target: a model that spends capacity predicting our own template learns nothing
  useful and its loss says less about the responses.
- **Token-level KD**: at every response position the student's next-token distribution is
  pulled towards the teacher's (forward KL, reverse KL or JSD(beta), from
  :func:`recslm.train.losses.distill_loss`, which works on hidden states and LM heads in
  chunks so the B×T×V logits of both models never exist at once), optionally plus
  cross-entropy to the reference response.
- **On-policy KD** (Agarwal et al., "GKD"; Gu et al., "MiniLLM"): for a fraction of each
  batch the student writes the response itself and the teacher grades every token of it.
  Off-policy KD only ever shows the student reference prefixes, so at inference it meets
  prefixes of its own making that it was never corrected on (exposure bias); on-policy
  samples are exactly those. Generated examples get no cross-entropy term: there is no
  label for a text the student just made up.
- **Phases**: a list of :class:`recslm.config.DistillPhase` run one after another on the
  same student (e.g. off-policy forward KL, then on-policy forward KL), each with its own
  checkpoint folder ``output_dir/phase-{i}``, so a retried run resumes inside the phase it
  was in and the later phases start from the earlier phases' weights.

Tokens: a prompt is encoded like a ranking prefix (the tokenizer's special start, if it
adds one), the response like a candidate (no special tokens) followed by the EOS token,
so the model learns where a response ends and sampling can stop there. A tokenizer
without an EOS token is refused (:class:`recslm.errors.TokenizerError`): the student
would never learn to stop and every on-policy sample would run to ``max_new_tokens``.

Padding: training and scoring batches are right-padded (causal attention never looks at
a later pad); generation batches are left-padded, because a decoder-only model appends
new tokens at the right end of every row. Masks come from lengths, never from
``input_ids == pad_token_id``: many tokenizers use the EOS token as pad token, and EOS
is a real response token here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_utils import get_last_checkpoint

from recslm.config import DistillPhase, SamplingConfig, TrainConfig
from recslm.data.reviews import GenerationRecord
from recslm.data.tokenizer import encode_candidate, encode_prefix
from recslm.errors import CheckpointError, ConfigError, DataError, TokenizerError
from recslm.models.vocabulary import check_vocabulary, tokenizer_logits
from recslm.train.losses import CHUNK_ELEMENTS, distill_loss
from recslm.train.runner import ListDataset, LogFn, ResumingTrainer, StepFn, TrainReport, callbacks, collate_list, fit, phase_log, training_arguments

LossKind = Literal["forward_kl", "reverse_kl", "jsd", "sft"]
EVAL_BATCH = 16

# Sampling from the student's own distribution at temperature T: switch off every
# truncation or penalty a checkpoint's generation_config.json may carry (top_k=20,
# top_p=0.8, ...), which would silently change the distribution being distilled.
PURE_SAMPLING: dict[str, Any] = dict(do_sample=True, num_beams=1, top_k=0, top_p=1.0, min_p=None, typical_p=1.0, repetition_penalty=1.0)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Example:
    """Token ids of one training example: the prompt, and the response that follows it (ending in EOS
    for a reference; a student sample ends in EOS or at ``max_new_tokens``)."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]


def eos_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The EOS id appended to responses, or a TokenizerError (see the module docstring for why)."""
    if tokenizer.eos_token_id is None:
        raise TokenizerError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}: no eos_token; generative "
            "training appends it to every response so the model learns to stop; add one (tokenizer.add_special_tokens)"
        )
    return int(tokenizer.eos_token_id)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id; any id works (masks come from lengths), so a tokenizer without one pads with EOS."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos_token_id(tokenizer)


def encode_records(tokenizer: PreTrainedTokenizerBase, records: Sequence[GenerationRecord]) -> list[Example]:
    """Prompt and response ids of every record, EOS appended to the response."""
    eos = eos_token_id(tokenizer)
    out = []
    for index, record in enumerate(records):
        prompt = encode_prefix(tokenizer, record.prompt)
        if not prompt:
            raise DataError(f"record {index}: empty prompt (a response needs a position to be predicted from)")
        out.append(Example(tuple(prompt), tuple(encode_candidate(tokenizer, record.response)) + (eos,)))
    return out


@dataclass
class Packed:
    """A right-padded batch of prompt + response rows.

    ``predict[b, t]`` is true where position t's logits predict a response token, i.e.
    t in [P - 1, P + R - 1) for a prompt of P and a response of R tokens; ``targets[b, t]``
    is that token.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    predict: torch.Tensor
    targets: torch.Tensor


def pack(examples: Sequence[Example], pad_id: int, device: torch.device | str = "cpu") -> Packed:
    """Right-pad prompt + response rows and mark the positions that predict response tokens."""
    rows = [e.prompt_ids + e.response_ids for e in examples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    predict = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, e) in enumerate(zip(rows, examples)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
        start = len(e.prompt_ids) - 1
        predict[i, start : start + len(e.response_ids)] = True
    targets = torch.full_like(ids, pad_id)
    targets[:, :-1] = ids[:, 1:]
    return Packed(ids.to(device), attention.to(device), predict.to(device), targets.to(device))


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, so every row's next token goes to the same column."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


# --------------------------------------------------------------------------- losses


def decoder_hidden(model: PreTrainedModel, packed: Packed) -> torch.Tensor:
    """[B, L, H] last hidden states (no LM head: the losses apply it only where they need it)."""
    return model.get_decoder()(input_ids=packed.input_ids, attention_mask=packed.attention_mask, use_cache=False).last_hidden_state


def token_cross_entropy_sum(head: torch.nn.Module, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy over [N, H] hidden rows, in checkpointed chunks of about CHUNK_ELEMENTS logits
    (the same memory bound as the KD loss: never all N×V float32 logits with their backward buffers)."""
    if rows.shape[0] == 0:
        return rows.sum() * 0.0
    chunk = max(1, CHUNK_ELEMENTS // head.weight.shape[0])

    def block(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, reduction="sum")

    if chunk >= rows.shape[0]:
        return block(rows, targets)
    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk):
        total = total + checkpoint(block, rows[start : start + chunk], targets[start : start + chunk], use_reentrant=False)
    return total


@dataclass(frozen=True)
class LossSettings:
    """What a phase optimizes. ``kind="sft"``: cross-entropy only; otherwise
    ``kd_weight`` × divergence (all response tokens) + ``ce_weight`` × cross-entropy (reference tokens)."""

    kind: LossKind = "forward_kl"
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    beta: float = 0.5
    temperature: float = 1.0
    vocab_size: int | None = None  # the tokenizer's: divergences compare these logits only (padded heads may differ beyond)


def generative_loss(
    student: PreTrainedModel,
    teacher: PreTrainedModel | None,
    examples: Sequence[Example],
    settings: LossSettings,
    pad_id: int,
    labelled: Sequence[bool] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch and its parts (``kd``, ``ce``: per-token means, for logging).

    ``labelled[i]`` is false for examples whose response the student generated: they get
    the divergence but no cross-entropy. Both terms are means over tokens, so a long
    response weighs more than a short one, as in per-token SFT.
    """
    labelled = [True] * len(examples) if labelled is None else list(labelled)
    packed = pack(examples, pad_id, student.device)
    hidden = decoder_hidden(student, packed)
    head = student.get_output_embeddings()
    ce_mask = packed.predict & torch.tensor(labelled, device=packed.predict.device)[:, None]
    parts: dict[str, float] = {}
    loss = hidden.sum() * 0.0
    if settings.kind == "sft" or settings.ce_weight > 0:
        count = int(ce_mask.sum())
        if count:
            ce = token_cross_entropy_sum(head, hidden[ce_mask], packed.targets[ce_mask]) / count
            loss = loss + (1.0 if settings.kind == "sft" else settings.ce_weight) * ce
            parts["ce"] = float(ce.detach())
    if settings.kind != "sft":
        if teacher is None:
            raise ConfigError(f"loss {settings.kind!r} needs a teacher")
        with torch.no_grad():
            teacher_hidden = decoder_hidden(teacher, packed)
        kd = distill_loss(
            hidden, teacher_hidden, tokenizer_logits(head, settings.vocab_size), tokenizer_logits(teacher.get_output_embeddings(), settings.vocab_size),
            packed.predict, kind=settings.kind, beta=settings.beta, temperature=settings.temperature,
        )  # fmt: skip
        loss = loss + settings.kd_weight * kd
        parts["kd"] = float(kd.detach())
    return loss, parts


# --------------------------------------------------------------------------- evaluation


def _batches(examples: list[Example], size: int) -> list[list[Example]]:
    """Batches of similar total length (less padding); the metrics below are order-free."""
    ordered = sorted(examples, key=lambda e: len(e.prompt_ids) + len(e.response_ids))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


class _EvalMode:
    """eval() and no_grad for the block, then the model's previous mode again."""

    def __init__(self, *models: torch.nn.Module):
        self.models = models
        self.modes = [m.training for m in models]
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        for m in self.models:
            m.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        for m, mode in zip(self.models, self.modes):
            m.train(mode)


def response_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[GenerationRecord], batch_size: int = EVAL_BATCH) -> float:
    """Mean cross-entropy per reference-response token (EOS included): the generative validation loss."""
    examples = encode_records(tokenizer, records)
    pad = pad_token_id(tokenizer)
    total, count = 0.0, 0
    with _EvalMode(model):
        for batch in _batches(examples, batch_size):
            packed = pack(batch, pad, model.device)
            hidden = decoder_hidden(model, packed)
            rows = hidden[packed.predict]
            total += float(token_cross_entropy_sum(model.get_output_embeddings(), rows, packed.targets[packed.predict]))
            count += rows.shape[0]
    return total / max(count, 1)


def teacher_divergence(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[GenerationRecord],
    kind: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl",
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    batch_size: int = EVAL_BATCH,
) -> float:
    """Mean divergence to the teacher per reference-response token (how far off-policy the student still is)."""
    examples = encode_records(tokenizer, records)
    pad = pad_token_id(tokenizer)
    total, count = 0.0, 0
    with _EvalMode(student, teacher):
        for batch in _batches(examples, batch_size):
            packed = pack(batch, pad, student.device)
            n = int(packed.predict.sum())
            kd = distill_loss(
                decoder_hidden(student, packed), decoder_hidden(teacher, packed), tokenizer_logits(student.get_output_embeddings(), len(tokenizer)),
                tokenizer_logits(teacher.get_output_embeddings(), len(tokenizer)), packed.predict, kind=kind, beta=beta, temperature=temperature,
            )  # fmt: skip
            total += float(kd) * n
            count += n
    return total / max(count, 1)


# --------------------------------------------------------------------------- on-policy sampling


def on_policy_indices(batch_size: int, fraction: float, seed: int, step: int) -> list[int]:
    """Which examples of a batch the student generates: round(fraction × batch) of them (halves round up),
    picked by a generator seeded with (seed, step), so a resumed run picks the same ones."""
    k = min(batch_size, int(math.floor(fraction * batch_size + 0.5)))
    if k == 0:
        return []
    rng = np.random.default_rng([seed, step])
    return sorted(int(i) for i in rng.choice(batch_size, size=k, replace=False))


def trim_at_eos(tokens: Sequence[int], eos_id: int) -> tuple[int, ...]:
    """A generated row up to and including its first EOS (what follows is padding), else all of it."""
    tokens = list(tokens)
    return tuple(tokens[: tokens.index(eos_id) + 1]) if eos_id in tokens else tuple(tokens)


def sample_responses(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    eos_id: int,
    temperature: float,
    max_new_tokens: int,
) -> list[tuple[int, ...]]:
    """Student samples for ``prompts`` (left-padded batch), at ``temperature`` with no truncation
    (``temperature`` 0: greedy), in eval mode and without gradients; the model's mode is restored afterwards.

    Sampling draws from torch's global RNG, which the Trainer seeds and checkpoints, so
    samples are reproducible for a seed and after a resume.
    """
    ids, mask = left_pad(prompts, pad_id, model.device)
    decoding = dict(do_sample=False, num_beams=1) if temperature == 0 else dict(temperature=temperature, **PURE_SAMPLING)
    with _EvalMode(model):
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True, **decoding,
        )  # fmt: skip
    return [trim_at_eos(row, eos_id) for row in out[:, ids.shape[1] :].tolist()]


@dataclass
class OnPolicyStats:
    """What on-policy sampling did in this process (a resumed phase counts only its own steps)."""

    batches: int = 0
    examples: int = 0
    generate_calls: int = 0
    generated_examples: int = 0
    generated_tokens: int = 0
    longest_generation: int = 0
    ended_with_eos: int = 0
    sampling_s: float = 0.0  # wall time inside generate(): on-policy cost is this share of the phase's wall time


@dataclass(frozen=True)
class Sampling:
    """The on-policy part of a phase: which fraction of each batch, and how to sample it."""

    fraction: float = 0.0
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


class GenerativeTrainer(ResumingTrainer):
    """Trainer whose loss is :func:`generative_loss`, after replacing a fraction of each batch's
    reference responses by student samples."""

    def __init__(
        self,
        *args: Any,
        teacher: PreTrainedModel | None,
        settings: LossSettings,
        sampling: Sampling,
        pad_id: int,
        eos_id: int,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.settings = settings
        self.sampling = sampling
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.stats = OnPolicyStats()
        if teacher is not None:
            teacher.eval()

    def on_policy_batch(self, model: PreTrainedModel, examples: list[Example]) -> tuple[list[Example], list[bool]]:
        """The batch with the chosen examples' responses replaced by student samples, and which are labelled."""
        chosen = on_policy_indices(len(examples), self.sampling.fraction, self.sampling.seed, self.state.global_step)
        self.stats.batches += 1
        self.stats.examples += len(examples)
        if not chosen:
            return examples, [True] * len(examples)
        started = time.perf_counter()
        generated = sample_responses(
            self.accelerator.unwrap_model(model), [examples[i].prompt_ids for i in chosen], pad_id=self.pad_id,
            eos_id=self.eos_id, temperature=self.sampling.temperature, max_new_tokens=self.sampling.max_new_tokens,
        )  # fmt: skip
        self.stats.sampling_s += time.perf_counter() - started
        self._count(generated)
        batch, labelled = list(examples), [True] * len(examples)
        for i, response in zip(chosen, generated):
            batch[i] = Example(examples[i].prompt_ids, response)
            labelled[i] = False
        return batch, labelled

    def _count(self, generated: list[tuple[int, ...]]) -> None:
        self.stats.generate_calls += 1
        self.stats.generated_examples += len(generated)
        self.stats.generated_tokens += sum(len(g) for g in generated)
        self.stats.longest_generation = max(self.stats.longest_generation, *(len(g) for g in generated))
        self.stats.ended_with_eos += sum(1 for g in generated if g[-1] == self.eos_id)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        model = self.accelerator.unwrap_model(model)  # generate() and .config need the plain model
        examples, labelled = self.on_policy_batch(model, list(inputs["items"]))
        loss, _ = generative_loss(model, self.teacher, examples, self.settings, self.pad_id, labelled)
        return (loss, None) if return_outputs else loss


# --------------------------------------------------------------------------- runs and phases


def _run(
    model: PreTrainedModel,
    teacher: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    cfg: TrainConfig,
    output_dir: Path,
    *,
    settings: LossSettings,
    sampling: Sampling,
    seed: int,
    on_log: LogFn | None,
    on_step: StepFn | None,
    deepspeed: dict[str, Any] | None,
    validation: ResponseValidation | None = None,
) -> tuple[TrainReport, OnPolicyStats]:
    """One Trainer run (resuming from ``output_dir``'s last checkpoint if any)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if teacher is not None and teacher.device != model.device:
        teacher.to(model.device)
    trainer = GenerativeTrainer(
        model=model,
        args=training_arguments(cfg, output_dir, n_items=len(examples), seed=seed, deepspeed=deepspeed),
        train_dataset=ListDataset(examples),
        data_collator=collate_list,
        processing_class=tokenizer,
        callbacks=callbacks(on_log, on_step, cfg if validation is not None else None),
        validation=validation,
        teacher=teacher,
        settings=settings,
        sampling=sampling,
        pad_id=pad_token_id(tokenizer),
        eos_id=eos_token_id(tokenizer),
    )
    report = fit(trainer, output_dir, examples=len(examples), items=len(examples))
    return report, trainer.stats


class ResponseValidation:
    """The val split as a generative model in training sees it: the response-token loss
    (:func:`response_loss`) on a seeded subset of records, the same one at every evaluation.
    Duck-types :class:`recslm.train.runner.Validation` (``groups``, ``score``), so the Trainer
    logs ``val_loss`` curves, keeps the best checkpoint and stops early on it."""

    def __init__(self, records: Sequence[GenerationRecord], tokenizer: PreTrainedTokenizerBase, *, max_records: int | None = None, seed: int = 0):
        records = list(records)
        if max_records is not None and len(records) > max_records:
            keep = np.sort(np.random.default_rng([seed, 7]).choice(len(records), size=max_records, replace=False))
            records = [records[i] for i in keep]
        if not records:
            raise DataError("validation: no val records")
        self.records, self.groups, self.tokenizer = records, records, tokenizer

    def score(self, model: PreTrainedModel) -> dict[str, float]:
        return {"loss": response_loss(model, self.tokenizer, self.records)}


def train_response_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[GenerationRecord],
    cfg: TrainConfig,
    output_dir: Path,
    *,
    seed: int,
    on_log: LogFn | None = None,
    on_step: StepFn | None = None,
    deepspeed: dict[str, Any] | None = None,
    validation: ResponseValidation | None = None,
) -> TrainReport:
    """SFT ``model`` in place on the reference responses (the generative teacher); resumes from checkpoints.

    ``cfg.groups_per_batch`` is the number of records per batch here. With ``validation`` (and
    ``cfg.eval_steps``) the best checkpoint on val loss is kept and early stopping applies.
    """
    if not records:
        raise DataError("train_response_model: no training records")
    check_vocabulary(model, None, tokenizer)
    report, _ = _run(
        model, None, tokenizer, encode_records(tokenizer, records), cfg, Path(output_dir),
        settings=LossSettings(kind="sft"), sampling=Sampling(), seed=seed, on_log=on_log, on_step=on_step, deepspeed=deepspeed,
        validation=validation if cfg.eval_steps else None,
    )  # fmt: skip
    return report


@dataclass
class PhaseReport:
    """One phase's outcome; ``generated_*`` count this process's samples only (0 for a phase only resumed)."""

    phase: int
    loss: str
    on_policy_fraction: float
    checkpoint_dir: str
    steps: int
    train_loss: float
    wall_s: float
    resumed_from: str | None
    examples_seen: int
    generated_examples: int
    generated_tokens: int
    longest_generation: int
    generations_ended_with_eos: int
    extra: dict[str, Any] = field(default_factory=dict)
    sampling_s: float = 0.0  # of wall_s, the time spent writing on-policy samples

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_phases(phases: Sequence[DistillPhase], teacher: PreTrainedModel | None) -> None:
    """Refuse schedules that cannot mean anything, before any training (errors name the phase)."""
    if not phases:
        raise ConfigError("distill.phases: at least one phase is needed")
    for i, phase in enumerate(phases):
        if phase.loss == "sft" and phase.on_policy_fraction > 0:
            raise ConfigError(
                f"distill.phases.{i}: loss sft with on_policy_fraction {phase.on_policy_fraction}: student samples have "
                "no reference to train cross-entropy on; use a divergence (forward_kl, reverse_kl, jsd) or set it to 0"
            )
        if phase.loss != "sft" and teacher is None:
            raise ConfigError(f"distill.phases.{i}: loss {phase.loss} needs a teacher")


def finished_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The last checkpoint of ``folder`` and its trainer state, if that run reached its max_steps.

    Needed because the Trainer, resumed from a checkpoint taken at its last step, still
    runs one more step (at learning rate 0 under the cosine schedule, so the weights
    survive, but an on-policy step still samples and every retry adds a checkpoint).
    """
    if not folder.is_dir():
        return None
    last = get_last_checkpoint(str(folder))
    state_file = Path(last) / "trainer_state.json" if last else None
    if state_file is None or not state_file.is_file():
        return None
    state = json.loads(state_file.read_text())
    done = state.get("max_steps", 0) > 0 and state.get("global_step", 0) >= state["max_steps"]
    return (Path(last), state) if done else None


def load_checkpoint_weights(model: PreTrainedModel, checkpoint_dir: Path) -> bool:
    """Load the safetensors weights of a Trainer checkpoint into ``model``; False if it holds none
    (e.g. a DeepSpeed layout: the Trainer then resumes it itself).

    Keys missing from the file are fine only for weights tied to a loaded one (a tied LM
    head is saved once); anything else means the checkpoint is of another architecture.
    """
    files = sorted(checkpoint_dir.glob("model*.safetensors"))
    if not files:
        return False
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in state if k in own}
    untied = [k for k in missing if own[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise CheckpointError(f"{checkpoint_dir}: weights do not fit the model (missing {untied[:5]}, unexpected {unexpected[:5]})")
    return True


def _reloaded_report(index: int, phase: DistillPhase, folder: Path, checkpoint_dir: Path, state: dict[str, Any]) -> PhaseReport:
    """The report of a phase that had already finished: nothing trained or sampled in this process."""
    losses = [entry["loss"] for entry in state.get("log_history", []) if "loss" in entry]
    return PhaseReport(
        phase=index, loss=phase.loss, on_policy_fraction=phase.on_policy_fraction, checkpoint_dir=str(folder),
        steps=int(state["global_step"]), train_loss=float(losses[-1]) if losses else float("nan"), wall_s=0.0,
        resumed_from=checkpoint_dir.name, examples_seen=0, generated_examples=0, generated_tokens=0,
        longest_generation=0, generations_ended_with_eos=0, extra={"already_finished": True},
    )  # fmt: skip


def distill_generative_phases(
    student: PreTrainedModel,
    teacher: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[GenerationRecord],
    phases: Sequence[DistillPhase],
    *,
    output_dir: Path,
    seed: int,
    beta: float = 0.5,
    temperature: float = 1.0,
    sampling: SamplingConfig | None = None,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    on_log: LogFn | None = None,
    on_step: StepFn | None = None,
    deepspeed: dict[str, Any] | None = None,
    validation: ResponseValidation | None = None,
) -> list[PhaseReport]:
    """Distill ``teacher`` into ``student`` (in place) through ``phases``, one after another.

    Phase i trains in ``output_dir/phase-{i}`` with its own ``train`` config and seed
    ``seed + i``, starting from the weights phase i-1 ended with. A retried schedule
    continues where it stopped: a phase whose folder holds its final checkpoint is not
    run again, its weights are loaded; an interrupted phase resumes from its last
    checkpoint (model, optimizer, scheduler, RNG and data position). ``beta`` and ``temperature`` shape the
    divergence; ``sampling`` (temperature, max_new_tokens) the on-policy samples;
    ``kd_weight`` / ``ce_weight`` weigh divergence and reference cross-entropy in
    divergence phases (an ``sft`` phase is cross-entropy only).
    """
    check_phases(phases, teacher)
    if not records:
        raise DataError("distill_generative_phases: no training records")
    check_vocabulary(student, teacher, tokenizer)
    sampling = sampling or SamplingConfig()
    examples = encode_records(tokenizer, records)
    reports = []
    for i, phase in enumerate(phases):
        folder = Path(output_dir) / f"phase-{i}"
        finished = finished_checkpoint(folder)
        if finished is not None and load_checkpoint_weights(student, finished[0]):
            reports.append(_reloaded_report(i, phase, folder, *finished))
            continue
        settings = LossSettings(kind=phase.loss, kd_weight=kd_weight, ce_weight=ce_weight, beta=beta, temperature=temperature, vocab_size=len(tokenizer))
        plan = Sampling(phase.on_policy_fraction, sampling.temperature, sampling.max_new_tokens, seed + i)
        report, stats = _run(
            student, teacher if phase.loss != "sft" else None, tokenizer, examples, phase.train, folder,
            settings=settings, sampling=plan, seed=seed + i, on_log=phase_log(on_log, i), on_step=on_step, deepspeed=deepspeed,
            validation=validation if phase.train.eval_steps else None,
        )  # fmt: skip
        reports.append(
            PhaseReport(
                phase=i, loss=phase.loss, on_policy_fraction=phase.on_policy_fraction, checkpoint_dir=str(folder),
                steps=report.steps, train_loss=report.train_loss, wall_s=report.wall_s, resumed_from=report.resumed_from,
                examples_seen=stats.examples, generated_examples=stats.generated_examples, generated_tokens=stats.generated_tokens,
                longest_generation=stats.longest_generation, generations_ended_with_eos=stats.ended_with_eos,
                sampling_s=round(stats.sampling_s, 3), extra={"best_step": report.best_step, "best_val_loss": report.best_metric, "stopped_early": report.stopped_early,
                       "val_history": report.val_history} if report.best_step is not None else {},
            )  # fmt: skip
        )
    return reports
