"""The whole pipeline config as pydantic models: YAML in, clear errors out.

One typed object, every field with a one-line description (like transformers'
``TrainingArguments``), so ``recslm config fields`` and the docs come from here.
Every section validates now, even for stages a given run does not execute, so a typo
in ``prune:`` is caught before the teacher spends an hour training.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, ValidationInfo, field_validator, model_validator

from recslm.errors import ConfigError
from recslm.yamlfile import YamlError, load_yaml


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment,
    and no float is infinite or NaN (an ``.inf`` learning rate is a typo, not a setting)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


Seed = Annotated[int, Strict()]
"""A seed is an integer as written: ``true`` or ``1.0`` is a mistake, not seed 1."""


# --------------------------------------------------------------------------- run / store / tracking


class RunConfig(StrictModel):
    name: str = Field("recslm", description="Human name of the pipeline; used as the MLflow experiment name.")
    root: Path = Field(Path("runs"), description="Folder for run folders (summary.json) and local stores; relative to the working directory.")
    seed: Seed = Field(0, description="Global seed for data sampling, initialization and training.")

    @field_validator("root")
    @classmethod
    def _root_is_a_folder(cls, root: Path) -> Path:
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} exists and is not a folder; expected a folder for run folders (created if missing)")
        return root


class RegistryConfig(StrictModel):
    """The MLflow model registry: every candidate becomes a version; the policy moves ``champion``."""

    enabled: bool = Field(True, description="Register the run's models in MLflow and apply the promotion policy (needs tracking.enabled).")
    model_name: str = Field("", description="Registered model name. Empty means run.name.")
    objective: Literal["bytes", "params", "auc_mean", "val_loss", "ttft_p99_ms"] = Field(
        "bytes", description="What a candidate must improve on the champion: size, parameters or p99 TTFT (lower, at equal quality), "
        "mean val AUC (higher; ranking) or val loss (lower; generative)."
    )
    quality_tolerance_pct: float = Field(0.2, ge=0, description="'Equal quality': mean AUC at most this many percent below the champion's.")
    min_gain_pct: float = Field(0.0, ge=0, description="The objective must improve on the champion's by more than this many percent.")
    lock_timeout_s: float = Field(600, gt=0, description="Seconds to wait for the registry lock (a Prefect global concurrency limit per model name).")


class StoreConfig(StrictModel):
    uri: str = Field(
        "",
        description="Artifact store: a local folder or s3://bucket/prefix. Empty means <run.root>/store.",
    )
    checkpoint_sync_s: float = Field(60.0, gt=0, description="S3 store: seconds between uploads of a running stage's new checkpoints (for retries on another node).")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError(f"expected a local folder, file:// or s3:// URI, got {value!r}")
        return value


class TrackingConfig(StrictModel):
    enabled: bool = Field(True, description="Log params, metrics and curves to MLflow.")
    uri: str = Field("", description="MLflow tracking URI. Empty means $MLFLOW_TRACKING_URI, else sqlite:///<run.root>/mlflow.db.")
    experiment: str = Field("", description="MLflow experiment name. Empty means run.name.")

    @field_validator("uri")
    @classmethod
    def _no_file_store(cls, value: str) -> str:
        if value.startswith("file:"):
            raise ValueError("MLflow 3.17 refuses file: stores; use sqlite:///path/mlflow.db or an http(s) server")
        return value


# --------------------------------------------------------------------------- data


class TokenizerConfig(StrictModel):
    kind: Literal["bpe", "pretrained"] = Field("bpe", description="Train a byte-level BPE on the records, or use a pretrained tokenizer directory.")
    vocab_size: int = Field(2048, ge=300, le=1_000_000, description="Vocabulary size of the trained BPE tokenizer.")
    path: Path | None = Field(None, description="Hugging Face tokenizer (or model) directory, for kind=pretrained.")

    @model_validator(mode="after")
    def _path_iff_pretrained(self) -> TokenizerConfig:
        if self.kind == "pretrained" and self.path is None:
            raise ValueError("kind=pretrained needs path: a Hugging Face tokenizer directory")
        if self.kind == "bpe" and self.path is not None:
            raise ValueError("path is only used with kind=pretrained; remove it or set kind: pretrained")
        return self


RankingTask = Literal["like", "love", "next"]


class DataConfig(StrictModel):
    source: Literal["movielens", "records", "reviews"] = Field(
        "movielens",
        description="MovieLens ratings turned into ranking tasks, ready-made ranking records, or the bundled clothing reviews "
        "(reviews: the generative task, a prompt and the review to write; see PipelineConfig.task).",
    )
    path: Path | None = Field(
        None,
        description="movielens: a folder with the parquet files or the original ml-100k layout (empty = bundled copy); "
        "records: a folder with train/val/test .jsonl or .parquet files.",
    )
    tasks: list[RankingTask] = Field(["like", "love", "next"], min_length=1, description="MovieLens tasks to build: like (rating>=4), love (rating=5), next (next rated item vs sampled negatives).")
    history_len: int = Field(10, ge=1, le=200, description="Most recent rated items shown in the member's prefix.")
    min_history: int = Field(3, ge=1, description="Skip member snapshots with fewer past ratings than this.")
    candidates_per_member: int = Field(8, ge=2, le=256, description="k: candidates that share one member prefix (next: 1 positive + k-1 negatives).")
    val_start_quantile: float = Field(0.8, gt=0.0, lt=1.0, description="Interactions after this time quantile are validation or test.")
    test_start_quantile: float = Field(0.9, gt=0.0, lt=1.0, description="Interactions after this time quantile are test.")
    train_stride: int = Field(8, ge=1, description="Interactions between two training snapshots of the same member.")
    item_stats: bool = Field(
        True,
        description="Show each candidate's rating count and mean as known strictly before the decision time (no future data).",
    )
    stats_style: Literal["words", "scale", "rank", "rank_scale"] = Field(
        "words",
        description="How item stats read: words (popularity in 5 words, half-star mean), scale (popularity and recent ratings on a 0-10 log2 scale, mean to 0.1), rank (popularity as 'top N%' of the items rated so far, half-star mean) or rank_scale (the rank, mean to 0.1, recent ratings on the log2 scale).",
    )
    item_recent: bool = Field(False, description="With item_stats: also show how many ratings the item got in the 30 days before the decision time (in words).")
    member_summary: bool = Field(False, description="Show the mean of the member's shown ratings on the History line (derived from the prompt's own history).")
    candidate_match: bool = Field(
        False,
        description="Show on each candidate how many of the member's shown history items share one of its genres and the member's mean rating of them "
        "(derived from the prompt's own history; logistic regression reads the same as features).",
    )
    eval_stride: int = Field(8, ge=1, description="Interactions between two validation or test snapshots of the same member.")
    max_train_groups: int | None = Field(None, ge=1, description="Cap on training groups (member x task x snapshot), sampled with the seed.")
    max_eval_members: int | None = Field(None, ge=1, description="Cap on members in val and test, sampled with the seed.")
    seed: Seed = Field(0, description="Seed for negative sampling and subsampling.")
    on_bad_rows: Literal["error", "skip"] = Field("error", description="records source: stop on malformed rows (listing their line numbers) or drop and count them.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    max_records: int | None = Field(None, ge=1, description="reviews: cap on records per split (a seeded sample of products and ratings).")
    max_response_chars: int = Field(400, ge=20, description="reviews: responses longer than this are cut at the last space before it.")

    @model_validator(mode="after")
    def _ordered_split(self) -> DataConfig:
        if self.val_start_quantile >= self.test_start_quantile:
            raise ValueError(
                f"val_start_quantile ({self.val_start_quantile}) must be below test_start_quantile ({self.test_start_quantile})"
            )
        if self.source == "records" and self.path is None:
            raise ValueError("source=records needs path: a folder with train/val/test records")
        return self


# --------------------------------------------------------------------------- models


class ArchSpec(StrictModel):
    """A small architecture spec for models built from scratch (vocabulary comes from the tokenizer)."""

    family: Literal["llama", "qwen2", "qwen3", "mixtral"] = Field("llama", description="Architecture family (mixtral = sparse mixture of experts).")
    hidden_size: int = Field(128, ge=8, description="Model width.")
    num_layers: int = Field(4, ge=1, description="Decoder layers.")
    num_heads: int = Field(4, ge=1, description="Query heads per layer.")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads (GQA); empty = num_heads.")
    head_dim: int | None = Field(None, ge=4, description="Per-head width; empty = hidden_size / num_heads.")
    intermediate_size: int = Field(256, ge=1, description="MLP width (per expert for MoE).")
    num_experts: int = Field(1, ge=1, description="Experts per MoE layer (mixtral only).")
    experts_per_token: int = Field(2, ge=1, description="Experts routed per token (mixtral only).")
    max_position_embeddings: int = Field(2048, ge=16, description="Longest context the model supports.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")
    tie_word_embeddings: bool = Field(False, description="Share input embeddings and LM head.")

    @model_validator(mode="after")
    def _consistent(self) -> ArchSpec:
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({kv})")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}), or set head_dim")
        if self.family == "mixtral":
            if self.num_experts < 2:
                raise ValueError("mixtral needs num_experts >= 2")
            if self.experts_per_token > self.num_experts:
                raise ValueError(f"experts_per_token ({self.experts_per_token}) exceeds num_experts ({self.num_experts})")
        elif self.num_experts != 1:
            raise ValueError(f"num_experts is only for family mixtral (got family {self.family})")
        return self


class TrainConfig(StrictModel):
    epochs: float = Field(1.0, gt=0, description="Passes over the training groups.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1 = use epochs).")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW, cosine decay).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    groups_per_batch: int = Field(8, ge=1, description="Member groups (one prefix, k candidates) per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    save_steps: int = Field(200, ge=1, description="Checkpoint every this many steps (resume point on retry).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every this many steps.")
    eval_steps: int = Field(
        0, ge=0, description="Score the val split every this many steps (val AUC per task and val loss, logged as curves) and keep the best checkpoint by best_metric; 0 = no validation during training (the last step is kept)."
    )
    eval_groups: int | None = Field(None, ge=1, description="Val groups scored at each evaluation (a seeded subset, the same every time); empty = all.")
    best_metric: Literal["val_auc_mean", "val_loss"] = Field("val_auc_mean", description="What picks the best checkpoint and drives early stopping.")
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop once best_metric has not improved for this many evaluations (epochs become an upper bound); 0 = train to the end."
    )

    @model_validator(mode="after")
    def _validation_schedule(self) -> TrainConfig:
        if self.early_stopping_patience and not self.eval_steps:
            raise ValueError("early_stopping_patience needs eval_steps > 0 (it counts evaluations on val)")
        if self.eval_steps and self.save_steps % self.eval_steps:
            raise ValueError(f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}): the best checkpoint must have been saved")
        return self


class FoundationConfig(StrictModel):
    """Causal-LM pre-training of the teacher before its answer-token fine-tuning (the paper's
    teacher is a foundation model that learned from member activity first)."""

    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=1.0, learning_rate=2e-3), description="Budget of the LM phase (groups_per_batch = blocks per step).")
    block_size: int = Field(512, ge=16, description="Tokens per training block (texts are packed, separated by the EOS token).")
    router_aux_loss_coef: float = Field(0.01, ge=0, description="Mixture-of-experts teachers: weight of the router's load-balancing loss.")


class DeepSpeedConfig(StrictModel):
    enabled: bool = Field(False, description="Train through DeepSpeed ZeRO.")
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage 0-3.")
    offload_optimizer: bool = Field(False, description="Offload optimizer state to CPU memory.")
    offload_params: bool = Field(False, description="Offload parameters to CPU memory (ZeRO-3).")


class TeacherConfig(StrictModel):
    arch: ArchSpec | None = Field(
        default_factory=lambda: ArchSpec(family="mixtral", num_experts=4, experts_per_token=2),
        description="Build the teacher from this spec and train it here (the default: a small MoE).",
    )
    path: Path | None = Field(None, description="Load a trained teacher from this Hugging Face directory instead of training one.")
    fine_tune: bool = Field(
        False, description="With path: fine-tune the loaded checkpoint on the answer token (teacher.train, with validation and early stopping) before distilling from it; off: use it as it is."
    )
    foundation: FoundationConfig | None = Field(
        None, description="Pre-train the teacher as a causal LM on the training period's prompts first (a built one from scratch, or a loaded one with fine_tune); empty = no pre-training."
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    task_weights: dict[str, float] = Field(
        default_factory=dict, description="Weight of each task's answer-token loss in the teacher's training (ranking data; a task left out weighs 1), e.g. {next: 3}."
    )
    ranking_loss: dict[str, float] = Field(
        default_factory=dict,
        description="Weight of a pairwise ranking term inside each decision (a member's candidates for one task), added to the teacher's "
        "answer-token loss for the tasks named, e.g. {next: 1}: it grades only the order of one decision's candidates (ranking data).",
    )
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="Train the teacher through DeepSpeed ZeRO (needed when it trains on several ranks: execution.multi_rank_stages).")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the checkpoint (off: safetensors and built-in architectures only).")

    def trains(self) -> bool:
        """Whether the teacher stage trains (a built teacher, or a loaded one being fine-tuned)."""
        return self.path is None or self.fine_tune

    @model_validator(mode="before")
    @classmethod
    def _path_clears_default_arch(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") is not None and "arch" not in data:
            data = {**data, "arch": None}
        return data

    @field_validator("task_weights", "ranking_loss")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        bad = {task: w for task, w in weights.items() if not w > 0}
        if bad:
            what = "task weights" if info.field_name == "task_weights" else "ranking-loss weights"
            raise ValueError(f"{what} must be positive, got {bad}")
        return weights

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        if (self.arch is None) == (self.path is None):
            raise ValueError("set exactly one of arch (build and train) or path (load a trained teacher)")
        if self.path is None and self.fine_tune:
            raise ValueError("teacher.fine_tune: a built teacher is always trained; fine_tune is for a teacher loaded from path")
        if self.path is not None and self.foundation is not None and not self.fine_tune:
            raise ValueError("teacher.foundation: pre-training a loaded teacher changes it; set fine_tune: true as well, or remove foundation")
        return self


class StudentSpec(StrictModel):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Unique student name (used in artifact and registry names).")
    arch: ArchSpec | None = Field(None, description="Build the student from this spec.")
    path: Path | None = Field(None, description="Or initialize it from this Hugging Face directory.")

    def model_name(self, role: str) -> str:
        """Summary and registry name of this student trained in ``role`` (the SFT baseline gets a suffix)."""
        return self.model_name_of(self.name, role)

    @staticmethod
    def model_name_of(name: str, role: str) -> str:
        return name if role == "student" else f"{name}-sft"

    @model_validator(mode="after")
    def _one_source(self) -> StudentSpec:
        if (self.arch is None) == (self.path is None):
            raise ValueError("set exactly one of arch or path")
        return self


# --------------------------------------------------------------------------- later stages


class SamplingConfig(StrictModel):
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the student's on-policy generations.")
    max_new_tokens: int = Field(64, ge=1, description="Longest on-policy generation, in tokens.")


class DistillPhase(StrictModel):
    loss: Literal["forward_kl", "reverse_kl", "jsd", "sft"] = Field("forward_kl", description="Divergence to the teacher (sft = cross-entropy only).")
    on_policy_fraction: float = Field(0.0, ge=0, le=1, description="Fraction of each batch generated by the student (generative data).")
    train: TrainConfig = Field(default_factory=TrainConfig)


class DistillConfig(StrictModel):
    phases: list[DistillPhase] = Field(default_factory=lambda: [DistillPhase()], min_length=1, description="Training phases, each starting from the previous one's checkpoint.")
    beta: float = Field(0.5, ge=0, le=1, description="JSD(beta) mixing weight.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of teacher and student logits.")
    kd_weight: float = Field(0.9, ge=0, description="Weight of the divergence on the answer token.")
    ce_weight: float = Field(0.1, ge=0, description="Weight of cross-entropy to the label on the answer token.")
    prompt_weight: float = Field(0.05, ge=0, description="Weight of the divergence over prompt tokens (normalized by their count).")
    teacher_logits: Literal["online", "topk", "served"] = Field(
        "online", description="Teacher forward at train time; its top-k log-probs computed once in-process (topk); or read once from a server running the teacher (served: students never load it)."
    )
    topk: int = Field(64, ge=1, description="k for precomputed teacher log-probs.")
    teacher_url: str | None = Field(
        None, pattern=r"^https?://\S+$", description="served: the SGLang (or recslm serve) endpoint running this run's teacher, e.g. http://teacher.recslm.svc:30000."
    )
    sft_baseline: bool = Field(False, description="Also train each student with cross-entropy only, for comparison.")
    label_fraction: float = Field(
        1.0, gt=0, le=1,
        description="Share of the training groups whose labels the students see (a fixed subset, chosen by a hash of the group: the same for every arm, "
        "seed and student). Below 1 the cross-entropy term, and the SFT baseline, use only those groups: the setting where distillation should help.",
    )
    unlabeled: Literal["drop", "kd"] = Field(
        "drop", description="With label_fraction < 1, what the other training groups do: drop (not trained on) or kd (the divergence to the teacher only; the teacher needs no labels)."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How the student samples on-policy responses (generative data).")
    seed: Seed | None = Field(None, description="Seed of student initialization and data order; empty = run.seed (vary it alone to measure seed noise with the same teacher).")
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)

    @model_validator(mode="after")
    def _unlabeled_needs_a_fraction(self) -> DistillConfig:
        if self.unlabeled == "kd" and self.label_fraction == 1.0:
            raise ValueError("distill.unlabeled: kd trains the unlabeled groups by KD alone, but label_fraction is 1 (every group is labeled); set label_fraction below 1")
        return self

    @model_validator(mode="after")
    def _served_needs_a_url(self) -> DistillConfig:
        if (self.teacher_logits == "served") != (self.teacher_url is not None):
            raise ValueError("distill.teacher_url: set it exactly when teacher_logits is served (the endpoint running the teacher)")
        return self


class SelectConfig(StrictModel):
    max_auc_drop_pct: float = Field(
        1.0, ge=-100, description="Largest allowed relative drop of mean val AUC vs the teacher, in percent (negative: the student must beat the teacher by that much)."
    )
    require_teacher_gate: bool = Field(
        False, description="Stop before any KD student trains unless the teacher's mean val AUC beats the best non-LM baseline's and the best SFT student's "
        "(generative task: unless its val loss is below the best SFT student's)."
    )
    max_val_loss_increase_pct: float = Field(
        10.0, ge=0, description="Generative task: largest allowed relative increase of val loss (response-token cross-entropy) vs the teacher, in percent."
    )


class BaselinesConfig(StrictModel):
    """Non-LM reference models fitted on the same train records and scored on the same evaluation records."""

    enabled: bool = Field(True, description="Fit popularity, item-mean, logistic-regression and gradient-boosted-tree baselines (MovieLens data).")


class CalibrationConfig(StrictModel):
    source: Literal["records", "text"] = Field("records", description="In-domain training records, or generic text.")
    count: int = Field(128, ge=1, description="Calibration prompts.")


class PruneStepConfig(StrictModel):
    mlp_fraction: float = Field(0.0, ge=0, lt=1, description="Share of the original MLP neurons removed once this step is done (cumulative).")
    heads_fraction: float = Field(0.0, ge=0, lt=1, description="Share of the original key/value groups removed once this step is done (cumulative).")


class ProfileConfig(StrictModel):
    context_lengths: list[int] = Field(default_factory=lambda: [128, 512, 1024], min_length=1, description="Prompt lengths (tokens) to time prefill at.")
    repeats: int = Field(3, ge=1, description="Timed forward passes per length (the median is reported), after one warm-up.")
    min_share: float = Field(0.25, ge=0, le=1, description="With prune.parts: auto, a part (attention or MLP) below this share of layer time at the longest length is not pruned.")


class RedistillConfig(TrainConfig):
    """How the pruned student is re-trained after each step: the train settings plus the loss."""

    loss: Literal["forward_kl", "reverse_kl", "jsd", "sft"] = Field(
        "forward_kl",
        description="Re-distillation loss: a divergence to the unpruned student with the distill recipe's weights, or sft (cross-entropy to the labels only, no teacher): the paper's KD vs SFT after pruning.",
    )

    def train(self) -> TrainConfig:
        """The train settings alone, as a distill phase takes them."""
        return TrainConfig(**self.model_dump(exclude={"loss"}))


class PruneConfig(StrictModel):
    enabled: bool = Field(False, description="Run the profile and prune stages on the selected student.")
    method: Literal["osscar", "magnitude", "wanda", "variance"] = Field("osscar", description="Pruning algorithm.")
    mlp_fraction: float = Field(0.0, ge=0, lt=1, description="Fraction of MLP neurons to remove.")
    heads_fraction: float = Field(0.0, ge=0, lt=1, description="Fraction of key/value head groups to remove.")
    steps: int = Field(1, ge=1, description="1 = one-shot; N = gradual with re-distillation after each step.")
    schedule: list[PruneStepConfig] = Field(
        default_factory=list,
        description="Explicit gradual schedule of cumulative targets (e.g. MLP 0.1875, MLP 0.375, then heads 0.5); empty = `steps` equal steps to mlp_fraction / heads_fraction.",
    )
    parts: Literal["config", "auto"] = Field("config", description="auto: skip a part whose share of layer time (profile stage) is below profile.min_share.")
    redistill: RedistillConfig | None = Field(None, description="Re-train after each step, from the unpruned student as teacher (redistill.loss: forward KL by default, or sft); empty = no re-training.")
    align: int = Field(1, ge=1, description="Kept widths are multiples of this (128 on GPUs).")
    ridge: float = Field(
        1e-4,
        ge=0,
        description="Relative ridge damping of the Gram matrix (times its mean diagonal). 1e-4: scored on the true, undamped objective, "
        "within 1% of the optimum on 91.5% of small problems (0: 96.5%, 1e-2: 83.5%; benchmarks/osscar_layer.py --ridges), while a dead "
        "neuron's Gram stays positive definite (at 0 it is singular).",
    )
    local_search_iters: int = Field(100, ge=0, description="Bound on local-search swaps per layer.")
    refit: bool = Field(True, description="Least-squares refit of the kept weights.")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)


class QuantizeConfig(StrictModel):
    enabled: bool = Field(False, description="Quantize the final student (pruned if prune is on) into one variant per scheme.")
    schemes: list[Literal["fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease"]] = Field(
        default_factory=lambda: ["fp8_dynamic"], min_length=1, description="Schemes to produce, each a model variant."
    )
    group_size: int = Field(128, ge=1, description="Weight group size of the W4A16 schemes; must divide every quantized layer's input width.")
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"], description="Linear layers left unquantized (names, or 're:' regexes).")
    quantease_sweeps: int = Field(20, ge=1, description="Most coordinate-descent sweeps of QuantEase per layer.")
    quantease_tol: float = Field(1e-3, ge=0, lt=1, description="QuantEase stops once a sweep lowers the layer objective by less than this fraction (0: run all sweeps or to a fixed point).")
    quantease_init: Literal["gptq", "rtn"] = Field("gptq", description="QuantEase's starting point: GPTQ's result or round-to-nearest.")
    gptq_block_size: int = Field(128, ge=1, description="GPTQ's lazy-update block (columns).")
    gptq_dampening: float = Field(0.01, ge=0, description="GPTQ's Hessian damping, as a fraction of its mean diagonal.")
    smoothquant_strength: float = Field(0.8, gt=0, lt=1, description="SmoothQuant's migration strength (W8A8-INT).")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @model_validator(mode="after")
    def _unique_schemes(self) -> QuantizeConfig:
        if len(set(self.schemes)) != len(self.schemes):
            raise ValueError(f"schemes lists a scheme twice: {self.schemes}")
        return self


class EvaluateConfig(StrictModel):
    prefix_sharing: bool = Field(True, description="Compute each member's shared prefix once and reuse its KV cache for all candidates.")
    split: Literal["val", "test"] = Field("test", description="Split reported as the model's AUC (auc, auc_mean); every model is also scored on val (val_auc), which is what decisions use.")
    groups_per_batch: int = Field(16, ge=1, description="Member groups scored per forward pass (speed only, not the result).")
    generate_records: int = Field(200, ge=1, description="Generative task: records of each scored split the model writes a response for (the task metric reads them).")
    max_new_tokens: int = Field(64, ge=1, description="Generative task: longest response written for the task metric, in tokens (greedy).")


class ServeConfig(StrictModel):
    enabled: bool = Field(False, description="Deploy the final model at the end of the run, smoke-test it (and benchmark it with bench.enabled).")
    model: str = Field("final", pattern=r"^(final|fp8_dynamic|w8a8_int|w4a16_gptq|w4a16_quantease)$", description="What to deploy: the final student (pruned if prune ran) or one of its quantized variants.")
    keep_running: bool = Field(False, description="Local target: leave the engine running after the run (the summary names its endpoint); off: stop it once verified and benchmarked.")
    target: Literal["local", "fleet", "kubernetes"] = Field(
        "local", description="Deploy to one local engine, a local fleet (the SGLang router in front of `replicas` recslm serve workers), or a Kubernetes SGLang fleet."
    )
    replicas: int = Field(1, ge=1, description="SGLang replicas (fleet: workers behind the router).")
    tensor_parallel: int = Field(1, ge=1, description="GPUs per replica (--tp).")
    quantization: Literal["none", "fp8", "compressed-tensors"] = Field("none", description="Weights format the server loads.")
    attention_backend: str | None = Field(None, description="SGLang --attention-backend; empty = SGLang's default.")
    mem_fraction_static: float = Field(0.85, gt=0, lt=1, description="SGLang --mem-fraction-static.")
    schedule_policy: Literal["lpm", "fcfs", "random", "dfs-weight"] = Field("lpm", description="SGLang --schedule-policy.")
    port: int = Field(30000, ge=1, le=65535, description="Server port.")
    router_policy: Literal["cache_aware", "member_hash", "round_robin"] = Field("cache_aware", description="Router policy across replicas.")
    cache_tokens: int = Field(200_000, ge=0, description="Local engine: prefix-cache budget in tokens.")
    max_body_bytes: int = Field(1 << 20, ge=1, description="Local engine: largest request body (413 beyond, before parsing).")
    max_items: int = Field(1024, ge=1, description="Local engine: most items in one /v1/score request, or prompts in one /generate batch (400 beyond).")
    max_request_tokens: int = Field(32_768, ge=1, description="Local engine: most tokens in one request, prompts plus max_new_tokens (400 beyond).")
    max_batch_tokens: int = Field(8192, ge=1, description="Local engine: most packed item tokens in one scoring forward (bounds memory; larger batches are split).")
    max_running_requests: int | None = Field(None, ge=1, description="SGLang --max-running-requests per replica; empty = SGLang's default.")
    namespace: str = Field(
        "recslm", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", description="Kubernetes namespace of the fleet (a DNS-1123 label)."
    )
    image: str = Field("lmsysorg/sglang:v0.5.23", min_length=1, description="Serving image (pinned; the same SGLang version the launch args are validated against).")
    router_image: str | None = Field(None, description="Router image; empty = the serving image, which ships sglang_router.")
    router_port: int = Field(8000, ge=1, le=65535, description="Port of the router, the fleet's single entry point.")
    gpu_type: str | None = Field(None, description="Node label nvidia.com/gpu.product the workers must run on (e.g. NVIDIA-H100-80GB-HBM3); empty = any GPU node.")
    startup_timeout_s: int = Field(1800, ge=60, description="Seconds a replica may take to load the model before Kubernetes restarts it.")
    cpu: str = Field("8", pattern=r"^\d+(\.\d+)?m?$", description="CPU request and limit of each replica (Kubernetes quantity).")
    memory: str = Field("64Gi", pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", description="Memory request and limit of each replica, /dev/shm included.")
    shm_size: str = Field("16Gi", pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", description="Size of /dev/shm (RAM-backed; NCCL needs it for tensor parallel).")
    model_disk: str = Field("100Gi", pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", description="Node-local disk for the downloaded checkpoint (emptyDir size limit).")
    s3_secret: str = Field(
        "recslm-s3",
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL, AWS_DEFAULT_REGION for the model download.",
    )


class BenchConfig(StrictModel):
    enabled: bool = Field(False, description="Run the load benchmark after deploy.")
    members_per_s: float = Field(4.0, gt=0, description="Poisson arrival rate of members.")
    candidates: int = Field(16, ge=1, description="k candidates per member.")
    prefix_tokens: int = Field(512, ge=1, description="Shared prefix length P.")
    output_tokens: int = Field(1, ge=1, description="Generated tokens per candidate (1 = ranking).")
    duration_s: float = Field(30.0, gt=0, description="Benchmark length.")
    candidate_tokens: int = Field(8, ge=1, description="Tokens per candidate.")
    member_pool: int = Field(64, ge=1, description="Distinct members; a member's first visit is cold (prefix not cached), later ones hot.")


class SlurmConfig(StrictModel):
    """The Slurm job each heavy stage (teacher, distill, evaluate, prune, quantize...) runs as."""

    partition: str | None = Field(None, description="Slurm partition (none: the cluster's default).")
    account: str | None = Field(None, description="Slurm account to charge.")
    gpus: int = Field(0, ge=0, description="GPUs per node of a heavy stage's job (--gpus-per-node).")
    nodes: int = Field(1, ge=1, description="Nodes of a multi-rank stage's job (execution.multi_rank_stages); other stages use one.")
    ranks_per_node: int | None = Field(
        None, ge=1, description="Ranks (srun tasks) per node of a multi-rank stage: one per GPU when empty (gpus, at least 1). Set it to run ranks on CPUs (gloo)."
    )
    cpus: int = Field(2, ge=1, description="CPUs per heavy stage.")
    mem_gb: int = Field(8, ge=1, description="Memory per heavy stage in GB.")
    time_min: int = Field(60, ge=1, description="Wall-time limit in minutes.")
    folder: Path | None = Field(None, description="Shared folder for job scripts, pickled calls and logs. Empty means <run.root>/slurm.")
    setup: list[str] = Field(default_factory=list, description="Shell lines run before the stage in the job (module load, source a venv).")
    sbatch_args: dict[str, str] = Field(default_factory=dict, description="Extra sbatch options, e.g. {qos: high, constraint: h100}.")
    poll_s: float = Field(1.0, gt=0, description="Seconds between checks of a running job's state.")


class KubernetesConfig(StrictModel):
    """Heavy stages as flow runs of the ``recslm-stage`` deployment on a Kubernetes work pool."""

    work_pool: str = Field("recslm-k8s", description="Prefect Kubernetes work pool the stage deployment runs on (for messages).")
    deployment: str = Field("k8s-gpu", description="Name of the recslm-stage deployment (deployments/prefect.yaml) heavy stages run as.")
    gpus: int | None = Field(1, ge=0, description="nvidia.com/gpu per heavy stage (the work pool's `gpus` job variable); null keeps the pool default.")
    ranks: int | None = Field(None, ge=1, description="torchrun ranks in the pod of a multi-rank stage: one per GPU when empty (gpus, at least 1).")
    namespace: str = Field("recslm", description="Namespace.")


class RuntimeConfig(StrictModel):
    """How every compute stage runs its numerics: the same here, in a Slurm job and in a pod.

    A stage's result depends on the thread count (parallel reductions split work by thread
    count), so it is fixed here rather than taken from the machine's cores, and it is part
    of every compute stage's content key (see ``recslm.runtime``)."""

    threads: int = Field(2, ge=1, le=256, description="torch CPU threads of every stage (also OMP_NUM_THREADS/MKL_NUM_THREADS of workers); part of each compute stage's key.")
    deterministic: bool = Field(True, description="torch deterministic algorithms (and cuBLAS's deterministic workspace on GPUs).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where compute stages run: the first GPU when there is one (auto), or forced; the teacher and its targets always follow the student.")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Training precision (bf16/fp16: mixed precision, fp32 master weights) and the precision a teacher is loaded and models are scored in. fp16 needs a GPU."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory for more compute (large students on one GPU).")

    def key(self) -> dict[str, Any]:
        """What joins a compute stage's content key: the thread count and determinism always,
        the rest only where it differs from its default (so adding a setting changes no
        existing key, and a run in fp32 reuses what an older version computed)."""
        always = {"threads": self.threads, "deterministic": self.deterministic}
        return {**always, **{k: v for k, v in self.model_dump(mode="json", exclude_defaults=True).items() if k not in always}}


class ExecutionConfig(StrictModel):
    backend: Literal["local", "slurm", "kubernetes"] = Field("local", description="Where heavy stages run.")
    retries: int = Field(2, ge=0, description="Retries of a stage after a transient error (never for deterministic ones).")
    retry_delay_s: float = Field(10.0, ge=0, description="Seconds between retries.")
    parallel_stages: int = Field(
        1, ge=1, description="Independent stages (students) run at once. Locally they share the CPU/GPU: keep 1 unless it has room."
    )
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    multi_rank_stages: list[Literal["teacher", "distill"]] = Field(
        default_factory=lambda: ["teacher", "distill"],
        description="Training stages that run data-parallel on every rank of their job (Slurm: nodes x ranks_per_node; Kubernetes: ranks), under DeepSpeed ZeRO; the others run one process.",
    )

    def ranks(self, stage: str) -> int:
        """Processes ``stage`` trains on: 1 unless it is a multi-rank stage on a remote backend."""
        if stage not in self.multi_rank_stages:
            return 1
        if self.backend == "slurm":
            return self.slurm.nodes * (self.slurm.ranks_per_node or max(self.slurm.gpus, 1))
        if self.backend == "kubernetes":
            return self.kubernetes.ranks or max(self.kubernetes.gpus or 1, 1)
        return 1


# --------------------------------------------------------------------------- the whole pipeline


class PipelineConfig(StrictModel):
    """Everything one pipeline run needs. Sections for later stages validate even when unused."""

    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    students: list[StudentSpec] = Field(default_factory=list, description="Students to distill (empty: stop after the teacher).")
    distill: DistillConfig = Field(default_factory=DistillConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @property
    def task(self) -> Literal["ranking", "generative"]:
        """What the models do: score a candidate with one answer token (ranking), or write a
        response (generative: ``data.source: reviews``). Derived from the data, so a config
        cannot pair reviews with a ranking pipeline."""
        return "generative" if self.data.source == "reviews" else "ranking"

    @model_validator(mode="after")
    def _generative_checks(self) -> PipelineConfig:
        """What the generative task does not do (yet): each refusal names the field to change."""
        if self.task != "generative":
            if self.registry.objective == "val_loss":
                raise ValueError("registry.objective: val_loss is the generative task's (data.source: reviews); a ranking model is judged on auc_mean, bytes, params or ttft_p99_ms")
            return self
        refused = [
            (self.teacher.foundation is not None, "teacher.foundation: the generative teacher trains on whole responses already (response SFT); remove it"),
            (self.distill.teacher_logits != "online", "distill.teacher_logits: generative distillation needs the teacher's logits at every response position, "
                                                      "including student-written ones (on-policy): use online"),  # fmt: skip
            (self.teacher.path is not None and self.teacher.fine_tune, "teacher.fine_tune: not available for the generative task yet (a loaded teacher is used as it is)"),
            (bool(self.teacher.task_weights), "teacher.task_weights: ranking tasks only (the generative teacher has one loss, on the response)"),
            (bool(self.teacher.ranking_loss), "teacher.ranking_loss: ranking tasks only (a generative record has no candidates to order)"),
            (self.distill.label_fraction < 1, "distill.label_fraction: ranking tasks only for now (a generative record's label is its response)"),
            (self.registry.objective == "auc_mean", "registry.objective: a generative model has no AUC; use val_loss (or bytes, params, ttft_p99_ms at equal val loss)"),
        ]
        trainings = [("teacher.train", self.teacher.train)] + [(f"distill.phases.{i}.train", p.train) for i, p in enumerate(self.distill.phases)]
        if self.prune.redistill is not None:
            trainings.append(("prune.redistill", self.prune.redistill))
        refused += [(train.eval_steps > 0 and train.best_metric != "val_loss",
                     f"{where}.best_metric: a generative model is validated on its response loss; set best_metric: val_loss (or eval_steps: 0)")
                    for where, train in trainings]  # fmt: skip
        problems = [message for bad, message in refused if bad]
        if problems:
            raise ValueError("data.source reviews (the generative task): " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        if self.prune.enabled and not self.students:
            raise ValueError("prune.enabled: pruning acts on the selected student, and students is empty")
        if self.bench.enabled and not self.serve.enabled:
            raise ValueError("bench.enabled: the benchmark runs against the deployed model; turn serve.enabled on too")
        if self.serve.enabled and self.serve.model != "final" and (not self.quantize.enabled or self.serve.model not in self.quantize.schemes):
            raise ValueError(f"serve.model: {self.serve.model} is not produced by this run; list it in quantize.schemes (with quantize.enabled) or deploy 'final'")
        if self.serve.enabled and not self.students:
            raise ValueError("serve.enabled: the deployed model is the selected student, and students is empty")
        if self.quantize.enabled and not self.students:
            raise ValueError("quantize.enabled: quantization acts on the selected (and pruned) student, and students is empty")
        names = [s.name for s in self.students]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"students: duplicate names {dupes}")
        if self.serve.enabled and self.serve.target == "kubernetes" and not self.store_uri().startswith("s3://"):
            raise ValueError(
                f"serve.target: kubernetes: the fleet's pods download the model from the artifact store, so store.uri must be an s3:// URI (it is {self.store_uri()})"
            )
        if self.registry.enabled and not self.tracking.enabled:
            raise ValueError("registry.enabled: the model registry is MLflow's; turn tracking.enabled on, or registry.enabled off")
        for stage, zero, field in (("teacher", self.teacher.deepspeed, "teacher.deepspeed"), ("distill", self.distill.deepspeed, "distill.deepspeed")):
            ranks = self.execution.ranks(stage)
            if ranks > 1 and not zero.enabled and (stage != "teacher" or self.teacher.trains()):
                raise ValueError(
                    f"execution: the {stage} stage runs on {ranks} ranks ({self.execution.backend}), which trains through DeepSpeed ZeRO: "
                    f"set {field}.enabled: true (zero_stage 2 or 3), or leave {stage} out of execution.multi_rank_stages"
                )
        if self.runtime.dtype == "fp16" and self.runtime.device == "cpu":
            raise ValueError("runtime.dtype: fp16 mixed precision needs a GPU (runtime.device: cpu); use bf16 on a CPU")
        for name, weights in (("task_weights", self.teacher.task_weights), ("ranking_loss", self.teacher.ranking_loss)):
            unknown = sorted(set(weights) - set(self.data.tasks))
            if unknown:
                raise ValueError(f"teacher.{name}: {unknown} not among data.tasks {list(self.data.tasks)}")
        if self.teacher.path is not None and self.data.tokenizer.kind == "bpe":
            raise ValueError(
                "teacher.path loads a trained teacher, which brings its own tokenizer: "
                "set data.tokenizer.kind: pretrained and data.tokenizer.path to the same directory"
            )
        return self

    def student(self, name: str) -> StudentSpec:
        """The student called ``name``."""
        for spec in self.students:
            if spec.name == name:
                return spec
        raise ConfigError(f"students: no student named {name!r} (have {[s.name for s in self.students]})")

    def student_seed(self) -> int:
        """Seed of everything student-side (initialization, data order, pruning and quantization
        calibration): ``distill.seed``, else ``run.seed``."""
        return self.distill.seed if self.distill.seed is not None else self.run.seed

    def registered_model_name(self) -> str:
        """The model's name in the registry and on a cluster: ``registry.model_name``, else ``run.name``."""
        return self.registry.model_name or self.run.name

    def store_uri(self) -> str:
        """The artifact store location, defaulting to a folder under ``run.root``."""
        return self.store.uri or str(self.run.root / "store")

    def tracking_uri(self) -> str:
        """``tracking.uri``, else ``MLFLOW_TRACKING_URI`` from the environment (how workers in
        infra/ are pointed at the team's server), else a SQLite file under ``run.root``."""
        return self.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.run.root / 'mlflow.db').resolve()}"

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the validated config's values that differ from their
        defaults: writing a default is the same as leaving it out, and a field a later recslm
        adds (with a default) leaves every existing config's hash alone. What a stage computes
        is pinned by its content key, which dumps the stage's whole config, defaults included."""
        return stable_hash(self.model_dump(mode="json", exclude_defaults=True))


def stable_hash(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys), the basis of config hashes and artifact keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


# --------------------------------------------------------------------------- loading


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its path and a YAML-parsed value (so 3 is an int, true a bool)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in path):
        raise ConfigError(f"--set {item!r}: expected a dotted key such as teacher.train.epochs")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except YamlError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw mapping; list items are addressed by index (students.0.name)."""
    for item in overrides:
        path, value = parse_override(item)
        node: Any = raw
        for depth, part in enumerate(path[:-1]):
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                node = node[_list_index(node, part, where, item)]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"--set {item!r}: {'.'.join(path[:depth])} is not a section")
                if part not in node and path[depth + 1].isdigit():
                    raise ConfigError(f"--set {item!r}: {where}.{path[depth + 1]} must index the list, but {where} is empty")
                node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, ".".join(path), item)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item!r}: {'.'.join(path[:-1])} is not a section")
    return raw


def _list_index(node: list[Any], part: str, where: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {item!r}: {where} must index the list (0..{len(node) - 1})")
    return int(part)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``file: a.b.c: what was expected (got ...)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and err["loc"] and err["loc"][-1] == "threads":
            msg = "unknown key: the thread count of every stage is runtime.threads now (one value, part of each stage's key)"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `recslm config fields` lists the valid ones)"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {_short(repr(got))})"
        lines.append(f"{source}: {loc}: {msg}{shown}")
    return "invalid config\n" + "\n".join(lines)


def _short(text: str, limit: int = 200) -> str:
    """A value as the error shows it: a config's values are short; an expanded one is not echoed whole."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read YAML (or start from defaults), apply ``--set`` overrides, validate; errors name file and field."""
    source = str(path) if path is not None else "<defaults>"
    raw: Any = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: config file not found")
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            line = file.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{file}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the config as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the config ({exc.strerror or exc})") from None
        try:
            raw = load_yaml(text) or {}
        except YamlError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def iter_fields(model: type[BaseModel] = PipelineConfig, prefix: str = ""):
    """Yield (dotted name, type, default, description) for every leaf field, for docs and `config fields`."""
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = info.annotation
        sub = _submodel(annotation)
        if sub is not None:
            yield from iter_fields(sub, dotted + ".")
            continue
        default = info.get_default(call_default_factory=True) if not info.is_required() else "(required)"
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        yield dotted, _type_name(annotation), default, info.description or ""


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = getattr(annotation, "__args__", ())
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if models and getattr(annotation, "__origin__", None) is not list:
        return models[0]
    return None


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
