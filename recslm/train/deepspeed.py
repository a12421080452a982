"""DeepSpeed ZeRO config for the Hugging Face Trainer, from a ``DeepSpeedConfig`` section.

recslm hands the dict returned by :func:`deepspeed_config` to ``TrainingArguments(deepspeed=...)``
(see ``recslm.train.runner.training_arguments``); the Trainer's DeepSpeed integration then
initializes the engine. Everything the Trainer already knows (batch sizes, gradient
accumulation, clipping) is left as ``"auto"`` so there is one source of truth, the
``TrainConfig``; a value written twice is a value that drifts.

No ``optimizer`` or ``scheduler`` section is written: the Trainer builds its own torch AdamW
and cosine schedule from ``TrainConfig``, exactly as without DeepSpeed, so a ZeRO run and a
plain run optimize the same objective the same way. That needs
``zero_allow_untested_optimizer`` (DeepSpeed only vouches for its own optimizers) and, with
optimizer offload, ``zero_force_ds_cpu_optimizer: false``. It also means DeepSpeed never
JIT-compiles its fused/CPU Adam kernels, which keeps a first run free of a C++ build.

DeepSpeed itself is an optional dependency (``pip install recslm[deepspeed]``), imported only
by :func:`require_deepspeed`, never by ``import recslm``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recslm.config import DeepSpeedConfig, TrainConfig
from recslm.errors import ConfigError
from recslm.models.factory import save_model

__all__ = ["deepspeed_config", "full_state_dict", "load_trained_model", "require_deepspeed", "save_trained_model"]

_FIELD = "distill.deepspeed"


def require_deepspeed() -> ModuleType:
    """Import DeepSpeed, or fail before any training starts with how to install it.

    DeepSpeed is heavy (it probes compilers and accelerators on import) and most users
    train on one device, so it is not a core dependency; a config that enables it must
    say so early rather than crash inside the Trainer.
    """
    try:
        import deepspeed
    except ImportError as exc:
        raise ConfigError(
            f"{_FIELD}.enabled is true but DeepSpeed is not installed ({exc}). Install it after torch, "
            "built against that torch: `pip install --no-build-isolation 'recslm[deepspeed]'` "
            "(from a checkout: `pip install --no-build-isolation -e '.[deepspeed]'`; `make test` does this)."
        ) from exc
    return deepspeed


def _offload(enabled: bool) -> dict[str, Any] | None:
    """CPU offload block. Pinned host memory only helps (and only exists) with a GPU."""
    return {"device": "cpu", "pin_memory": torch.cuda.is_available()} if enabled else None


def deepspeed_config(cfg: DeepSpeedConfig, train: TrainConfig) -> dict[str, Any] | None:
    """The Trainer's DeepSpeed config dict for ``cfg``, or None when DeepSpeed is off.

    - ``zero_optimization.stage`` is ``cfg.zero_stage``; bucket sizes are ``"auto"`` so
      the Trainer derives them from the model's hidden size.
    - ``offload_optimizer`` / ``offload_param`` move optimizer state / parameters to CPU
      memory. Parameter offload exists only in ZeRO-3 (stages 0-2 keep a full parameter
      copy on every device), so asking for it otherwise is a config error rather than a
      setting DeepSpeed would silently ignore.
    - With ZeRO-3, ``stage3_gather_16bit_weights_on_model_save`` makes the Trainer gather
      the partitioned weights when it saves, so every checkpoint's ``model.safetensors``
      holds full tensors that plain ``transformers`` (and SGLang) load without DeepSpeed.
    - Mixed precision follows ``TrainingArguments`` (``"auto"``) on a GPU and is off on a
      CPU: recslm trains CPU models in float32, and the CPU runs are tested that way.
    - ``steps_per_print`` matches ``train.logging_steps`` so DeepSpeed's own progress lines
      come at the same cadence as the Trainer's.

    Raises ConfigError for a bad combination, and (see :func:`require_deepspeed`) when
    DeepSpeed is not installed: callers build this before loading data and models, so
    either mistake stops the stage before expensive work.
    """
    if not cfg.enabled:
        return None
    if cfg.offload_params and cfg.zero_stage != 3:
        raise ConfigError(
            f"{_FIELD}.offload_params: parameter offload needs ZeRO stage 3 "
            f"({_FIELD}.zero_stage is {cfg.zero_stage}); set zero_stage: 3 or offload_params: false"
        )
    require_deepspeed()
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage >= 2:
        zero.update(overlap_comm=torch.cuda.is_available(), contiguous_gradients=True, reduce_bucket_size="auto")
    if cfg.zero_stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if (block := _offload(cfg.offload_optimizer)) is not None:
        zero["offload_optimizer"] = block
    if (block := _offload(cfg.offload_params)) is not None:
        zero["offload_param"] = block
    precision: Any = "auto" if torch.cuda.is_available() else False
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": precision},
        "fp16": {"enabled": precision},
        "steps_per_print": train.logging_steps,
        "wall_clock_breakdown": False,
    }


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _is_zero3_param(tensor: torch.Tensor) -> bool:
    """ZeRO-3 replaces each parameter's data by this rank's shard and tags it with ``ds_id``."""
    return hasattr(tensor, "ds_id")


def full_state_dict(model: PreTrainedModel, *, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """The model's full weights as CPU tensors, also after ZeRO-3 training (which leaves shards).

    After ``Trainer.train`` under ZeRO-3 each rank holds only its shard of every parameter,
    so ``model.state_dict()`` is a dict of empty tensors. Parameters are gathered one at a
    time (each gather is a collective: every rank must call this, in the same order), so the
    extra device memory is one parameter, not the model. Only rank 0 keeps the copies
    unless ``all_ranks``; other ranks get ``{}``. Without ZeRO-3 this is a plain CPU copy.
    Tied parameters stay one tensor, so ``save_pretrained`` still sees them as tied.
    """
    keep = all_ranks or _rank() == 0
    out: dict[str, torch.Tensor] = {}
    copies: dict[int, torch.Tensor] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in copies:
            if _is_zero3_param(tensor):
                with require_deepspeed().zero.GatheredParameters([tensor], modifier_rank=None):
                    copy = tensor.detach().cpu().clone() if keep else None
            else:
                copy = tensor.detach().cpu().clone() if keep else None
            if copy is None:
                continue
            copies[id(tensor)] = copy
        out[name] = copies[id(tensor)]
    return out


def save_trained_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Save a model trained (possibly under ZeRO) as a plain Hugging Face directory, from rank 0.

    Call it on every rank after training: under ZeRO-3 the weights are gathered first (see
    :func:`full_state_dict`), and the ranks meet at a barrier so none moves on (e.g. to read
    the folder) before rank 0 has finished writing it. Outside ZeRO-3 and outside a
    distributed run this is ``recslm.models.factory.save_model``.
    """
    zero3 = any(_is_zero3_param(p) for p in model.parameters())
    state = full_state_dict(model) if zero3 else None
    if _rank() == 0:
        if state is None:
            save_model(model, tokenizer, folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(str(folder), state_dict=state)
            tokenizer.save_pretrained(str(folder))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def load_trained_model(folder: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """A plain model (full tensors, no ZeRO hooks) from what :func:`save_trained_model` wrote.

    While the ZeRO-3 config of a finished Trainer is still registered with transformers,
    ``from_pretrained`` builds the model partitioned (``zero.Init``): each rank would get
    shards, and scoring or saving it would fail or write empty tensors. Training is over, so
    the registration is dropped first (a new Trainer registers its own).
    """
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from recslm.models.factory import load_model

    unset_hf_deepspeed_config()
    return load_model(folder, trust_remote_code)
