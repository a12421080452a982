"""Where and in what precision a stage computes: the one placement decision every stage uses.

``runtime.device`` (``auto`` | ``cpu`` | ``cuda``) names the stage's device and
``runtime.dtype`` (``fp32`` | ``bf16`` | ``fp16``) its precision. Distillation has a second
rule: whatever feeds the student's loss (the teacher, its stored top-k targets, the batch)
is put where the *student* is, so a Trainer (or DeepSpeed) that moved the student to a GPU
never meets a teacher left on the CPU. :func:`follow` is that rule.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

import torch

from recslm.errors import ConfigError
from recslm.models.factory import load_model
from recslm.runtime import current_runtime

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

T = TypeVar("T")


def stage_device(device: str) -> torch.device:
    """``runtime.device`` as a torch device: ``auto`` is the first GPU when there is one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: cuda, but torch sees no CUDA device on this machine (use auto or cpu)")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.device: expected auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def torch_dtype(dtype: str) -> torch.dtype:
    """``runtime.dtype`` as a torch dtype."""
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"runtime.dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}") from None


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (a model recslm places lives on one device)."""
    return next(model.parameters()).device


def follow(model: torch.nn.Module, leader: torch.nn.Module) -> torch.nn.Module:
    """Move ``model`` onto ``leader``'s device if it is elsewhere (a no-op once it is there,
    so it is cheap to call every step); its dtype is left alone (a bf16 teacher stays bf16)."""
    device = device_of(leader)
    if device_of(model) != device:
        model.to(device)
    return model


def to_device(value: T, device: torch.device) -> T:
    """A dataclass of tensors (stored top-k targets) with every field on ``device``."""
    return replace(value, **{f.name: getattr(value, f.name).to(device) for f in fields(value)})  # type: ignore[type-var]


def load_trainable(path: Path, trust_remote_code: bool = False) -> torch.nn.Module:
    """A model a stage changes (pruned, then re-distilled): fp32 master weights on the stage's device."""
    return load_model(path, trust_remote_code).to(stage_device(current_runtime().device))


def load_placed(path: Path, trust_remote_code: bool = False) -> torch.nn.Module:
    """A model a stage reads but does not train (the teacher for distillation or top-k, a
    model under evaluation): loaded in the stage's ``runtime.dtype``, on its device."""
    runtime = current_runtime()
    return load_model(path, trust_remote_code, dtype=torch_dtype(runtime.dtype)).to(stage_device(runtime.device))
