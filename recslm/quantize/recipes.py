"""llm-compressor recipes of the quantization schemes (paper Appendix B.1), and their preconditions.

| scheme | weights | activations | algorithm |
|---|---|---|---|
| ``fp8_dynamic`` | FP8 E4M3, per output channel | FP8, per token, dynamic | none (data-free) |
| ``w8a8_int`` | INT8, per output channel | INT8, per token, dynamic | SmoothQuant, then GPTQ |
| ``w4a16_gptq`` | INT4, groups of ``group_size`` | 16-bit | GPTQ |
| ``w4a16_quantease`` | INT4, groups of ``group_size`` | 16-bit | GPTQ start, then QuantEase |

The LM head stays unquantized by default (``quantize.ignore``): it is one matrix and the
ranking score is read from it. Every scheme saves compressed-tensors checkpoints that
SGLang and vLLM load without extra flags.
"""

from __future__ import annotations

from typing import Any

import torch

from recslm.config import QuantizeConfig
from recslm.errors import ConfigError

GROUPED_SCHEMES = ("w4a16_gptq", "w4a16_quantease")


def quantized_layers(model: torch.nn.Module, ignore: list[str]) -> list[tuple[str, torch.nn.Module]]:
    """The linear layers a recipe quantizes: llm-compressor's own matching of ``Linear`` minus ``ignore``."""
    from compressed_tensors.utils import match_named_modules

    return list(match_named_modules(model, ["Linear"], ignore))


def check_group_size(model: torch.nn.Module, group_size: int, ignore: list[str]) -> None:
    """Fail before any calibration if a quantized layer's input width is not a multiple of
    ``group_size`` (llm-compressor would fail in the middle of the run), naming every such layer."""
    bad = [f"{name} (in_features {layer.in_features})" for name, layer in quantized_layers(model, ignore) if layer.in_features % group_size]
    if bad:
        raise ConfigError(
            f"quantize.group_size: {group_size} must divide the input width of every quantized layer; "
            f"{len(bad)} layer(s) do not: {', '.join(bad)}. Pick a group size that divides them, "
            "prune with prune.align a multiple of it, or add the layers to quantize.ignore"
        )


def _w4a16(group_size: int) -> dict[str, Any]:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}


def build_recipe(scheme: str, cfg: QuantizeConfig) -> list[Any]:
    """The llm-compressor modifiers of ``scheme`` with the settings of ``cfg``."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    from recslm.quantize.modifier import LayerwiseGPTQModifier, QuantEaseModifier

    ignore = list(cfg.ignore)
    gptq = {"ignore": ignore, "block_size": cfg.gptq_block_size, "dampening_frac": cfg.gptq_dampening}
    if scheme == "fp8_dynamic":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=ignore)]
    if scheme == "w8a8_int":
        return [SmoothQuantModifier(smoothing_strength=cfg.smoothquant_strength), LayerwiseGPTQModifier(targets="Linear", scheme="W8A8", **gptq)]
    if scheme == "w4a16_gptq":
        return [LayerwiseGPTQModifier(config_groups=_w4a16(cfg.group_size), **gptq)]
    if scheme == "w4a16_quantease":
        return [QuantEaseModifier(config_groups=_w4a16(cfg.group_size), sweeps=cfg.quantease_sweeps, tol=cfg.quantease_tol, init=cfg.quantease_init, **gptq)]
    raise ConfigError(f"quantize.schemes: unknown scheme {scheme!r}; expected one of fp8_dynamic, w8a8_int, w4a16_gptq, w4a16_quantease")
