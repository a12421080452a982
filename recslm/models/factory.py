"""Build a causal LM from a small spec, or load one from a Hugging Face directory.

Everything recslm saves is a standard Hugging Face directory (safetensors only) that
vanilla transformers, SGLang and vLLM load without recslm.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MixtralConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen3Config,
)

from recslm.config import ArchSpec
from recslm.errors import CheckpointError

_CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "mixtral": MixtralConfig,
}


def config_from_spec(spec: ArchSpec, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """A transformers config for the spec, with vocabulary and special ids from the tokenizer."""
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads or spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
    )
    if spec.head_dim is not None or spec.family == "qwen3":
        kwargs["head_dim"] = spec.head_dim or spec.hidden_size // spec.num_heads
    if spec.family == "mixtral":
        kwargs.update(num_local_experts=spec.num_experts, num_experts_per_tok=spec.experts_per_token)
    return _CONFIG_CLASSES[spec.family](**kwargs)


def build_model(spec: ArchSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A freshly initialized model of the spec (deterministic for the seed)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config_from_spec(spec, tokenizer), dtype=torch.float32)
    return model


def _quantized_loading(path: Path) -> dict[str, Any]:
    """Loading options for a compressed-tensors checkpoint (the quantize stage's output).

    It is loaded *dequantized*: each weight is unpacked once to its exact grid values and
    the layer keeps its quantization scheme, so activations are still quantized on the fly
    (FP8 / INT8 per token). On a CPU that is fake quantization on exactly the saved grid;
    the packed low-bit kernels are the serving engine's business. A checkpoint without a
    ``quantization_config`` loads unchanged.
    """
    try:
        quantization = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: unreadable ({exc})") from exc
    if quantization.get("quant_method") != "compressed-tensors":
        return {}
    from transformers.utils.quantization_config import CompressedTensorsConfig

    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}


def load_model(path: Path, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load a Hugging Face directory (safetensors only), with errors that name the directory."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a Hugging Face model directory (config.json missing)")
    check_safetensors(path)
    try:
        with warnings.catch_warnings():  # "quantization_config passed and in the checkpoint": the override is the point
            warnings.filterwarnings("ignore", message=".*quantization_config.*")
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code, **_quantized_loading(path)
            )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: cannot load the model ({exc})") from exc
    return model


def check_safetensors(path: Path) -> None:
    """Refuse anything but complete safetensors weights before transformers sees the folder:
    every shard a ``*.index.json`` names must be a ``.safetensors`` file in the folder (an
    index of ``.bin`` shards would otherwise slip past a "some *.safetensors exists" check),
    and every weights file must have a readable header and the bytes it announces (a
    truncated file is named here, not deep in the loader)."""
    indexes = sorted(path.glob("*.index.json"))
    shards: set[str] = set()
    for index in indexes:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            named = set(weight_map.values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a readable shard index (expected a JSON object with a weight_map): {exc}") from None
        pickled = sorted(n for n in named if not str(n).endswith(".safetensors"))
        if pickled:
            raise CheckpointError(f"{index}: names shards {pickled[:3]} that are not safetensors; recslm loads safetensors only (no pickle)")
        missing = sorted(n for n in named if not (path / n).is_file() or Path(n).name != n)
        if missing:
            raise CheckpointError(f"{index}: names shards {missing[:3]} that are not files in {path}")
        shards |= named
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors weights; recslm loads safetensors only (no pickle)")
    for file in files:
        _check_safetensors_file(file)


def _check_safetensors_file(file: Path) -> None:
    """Header readable and the data it describes present: size = 8 + header length + last data offset."""
    size = file.stat().st_size
    try:
        with file.open("rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            if size < 8 or header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header of {header_len:,} bytes does not fit in {size:,}")
            header = json.loads(handle.read(header_len))
        end = max((int(t["data_offsets"][1]) for name, t in header.items() if name != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from None
    if 8 + header_len + end != size:
        raise CheckpointError(f"{file}: {size:,} bytes, but its header describes {8 + header_len + end:,} (truncated or padded); rebuild or re-download it")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """save_pretrained of model and tokenizer into ``folder`` (safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


# parameters that compressed-tensors attaches to a quantized layer: they describe the
# quantization grid of a weight, they are not weights of the model
QUANTIZATION_PARAMETER_SUFFIXES = ("_scale", "_zero_point", "_g_idx", "_shape")


def count_parameters(model: torch.nn.Module) -> int:
    """Number of model weights (all experts of a MoE count; quantization scales do not)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.endswith(QUANTIZATION_PARAMETER_SUFFIXES))


def count_non_embedding_parameters(model: torch.nn.Module) -> int:
    """Weights outside the input embeddings and the output head: what the transformer computes
    with per token. Tiny models are mostly embeddings, so a size claim must say which count it uses.
    A tied head is one tensor with the embeddings and is counted once, among the excluded."""
    excluded = {id(p) for module in (model.get_input_embeddings(), model.get_output_embeddings()) if module is not None for p in module.parameters()}
    return sum(p.numel() for name, p in model.named_parameters() if id(p) not in excluded and not name.endswith(QUANTIZATION_PARAMETER_SUFFIXES))


def directory_bytes(folder: Path) -> int:
    """Bytes of the weight files in a model directory (what a server has to load)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def describe(model: PreTrainedModel) -> dict[str, object]:
    """A small JSON-able description for stage records."""
    cfg = model.config
    return {
        "model_type": cfg.model_type,
        "params": count_parameters(model),
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "num_kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        "intermediate_size": cfg.intermediate_size,
        "num_experts": getattr(cfg, "num_local_experts", 1),
    }

