"""The per-layer input statistics (H = XᵀX) that pruning is judged on (the prompts they are
collected on come from :mod:`recslm.data.calibration`).

Pruning is layer-wise and sequential: layer 0 is calibrated, pruned in place, then layer 1
is calibrated with the already-pruned layer 0 feeding it, and so on, so each layer is fit
to the inputs it will really see. :func:`collect_layer_stats` therefore reads the model as
it is at the call (nothing is cached across calls), and stops the forward right after the
requested layer: calibrating layer l costs l + 1 layers, not the whole model.

Statistics count real tokens only. Prompts are right-padded in batches; under a causal
mask a real token never attends to the padding after it, so its activations equal those of
the unpadded prompt, and the pad positions themselves are dropped with the attention mask.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from recslm.errors import ConfigError, DataError
from recslm.models.surgery import decoder_layers

PARTS: tuple[str, ...] = ("mlp", "attn")
"""Statistic keys: "mlp" is the input of ``mlp.down_proj``, "attn" the input of ``self_attn.o_proj``."""


# ---------------------------------------------------------------------------------------------
# batching


def pad_batch(inputs: Sequence[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors into ``ids`` [B, T] and an ``attention_mask`` [B, T] (1 = real token)."""
    if not inputs:
        raise DataError("calibration: an empty batch of prompts")
    width = max(int(x.numel()) for x in inputs)
    ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, x in enumerate(inputs):
        ids[row, : x.numel()] = x
        mask[row, : x.numel()] = 1
    return ids, mask


def iter_batches(inputs: Sequence[torch.Tensor], batch_size: int, pad_id: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Padded batches of ``inputs`` in length order (less padding to compute); statistics are
    sums over tokens, so the order does not change them."""
    if batch_size < 1:
        raise ConfigError(f"calibration: batch_size must be at least 1, got {batch_size}")
    for index, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor) or x.dim() != 1 or x.numel() == 0 or x.is_floating_point():
            raise DataError(f"calibration prompt {index}: expected a non-empty 1-D tensor of token ids")
    ordered = sorted(inputs, key=lambda x: int(x.numel()))
    for start in range(0, len(ordered), batch_size):
        yield pad_batch(ordered[start : start + batch_size], pad_id)


# ---------------------------------------------------------------------------------------------
# layer statistics


@dataclass
class LayerStats:
    """Sufficient statistics of a linear layer's inputs X ([tokens, in]) over real tokens.

    ``gram`` = XᵀX and ``sum`` = Σx (float64), ``tokens`` = number of rows of X. Together they
    give H for the reconstruction objective and the per-column mean and variance that
    variance-based baselines need, without keeping X itself.
    """

    gram: torch.Tensor
    sum: torch.Tensor
    tokens: int

    @classmethod
    def zeros(cls, width: int, device: torch.device | str = "cpu") -> LayerStats:
        return cls(torch.zeros(width, width, dtype=torch.float64, device=device), torch.zeros(width, dtype=torch.float64, device=device), 0)

    @property
    def width(self) -> int:
        return int(self.sum.numel())

    def add(self, rows: torch.Tensor) -> None:
        """Accumulate rows of X ([n, in]); the products are formed in float64, not just summed in it."""
        x = rows.detach().to(torch.float64)
        self.gram += x.T @ x
        self.sum += x.sum(dim=0)
        self.tokens += int(x.shape[0])

    def to(self, device: torch.device | str) -> LayerStats:
        return LayerStats(self.gram.to(device), self.sum.to(device), self.tokens)

    def mean(self) -> torch.Tensor:
        """Per-column mean of X ([in], float64)."""
        if self.tokens == 0:
            raise DataError("layer statistics over zero tokens: no calibration tokens reached this layer")
        return self.sum / self.tokens

    def variance(self) -> torch.Tensor:
        """Per-column population variance of X: diag(H)/n − mean² ([in], float64, clamped at 0
        because the subtraction can round a constant column slightly below zero)."""
        mean = self.mean()
        return (self.gram.diagonal() / self.tokens - mean * mean).clamp_min(0.0)


class _StopForward(Exception):
    """Raised by a hook after the calibrated layer: the layers above it are not needed."""


def _input_module(block: torch.nn.Module, part: str, layer: int) -> torch.nn.Module:
    """The linear layer whose input columns ``part`` prunes."""
    owner, name = {"mlp": ("mlp", "down_proj"), "attn": ("self_attn", "o_proj")}[part]
    module = getattr(getattr(block, owner, None), name, None)
    if not isinstance(module, torch.nn.Linear):
        raise ConfigError(
            f"layer {layer}: {owner}.{name} is not a linear layer ({type(getattr(block, owner, None)).__name__}); "
            f"structured {part} pruning needs a dense {owner} (mixture-of-experts MLPs are not supported: pass parts=('attn',))"
        )
    return module


def collect_layer_stats(
    model: PreTrainedModel,
    inputs: Sequence[torch.Tensor],
    layer: int,
    *,
    batch_size: int = 8,
    parts: Collection[str] = PARTS,
) -> dict[str, LayerStats]:
    """Input statistics of ``layers[layer]``'s ``mlp.down_proj`` ("mlp") and ``self_attn.o_proj``
    ("attn") over the real tokens of ``inputs`` (1-D id tensors), on the model as it is now.

    Runs in eval mode under no_grad (the training mode is restored after) and stops the
    forward after ``layers[layer]``. Hooks are removed whatever happens, so a failed call
    leaves the model as it was. Statistics are returned on the CPU.
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ConfigError(f"calibration: parts must be a non-empty subset of {list(PARTS)}, got {sorted(parts)}")
    if not inputs:
        raise DataError("calibration: no prompts to collect statistics from")
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ConfigError(f"calibration: layer {layer} out of range; the model has {len(layers)} layers")
    targets = {part: _input_module(layers[layer], part, layer) for part in PARTS if part in parts}
    stats = {part: LayerStats.zeros(module.in_features) for part, module in targets.items()}
    real: list[torch.Tensor] = []  # the real-token mask of the batch in flight (set before each forward)

    def accumulate(part: str):
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x, mask = args[0], real[0]
            if x.shape[:2] != mask.shape:
                raise RuntimeError(f"calibration: {part} input of shape {tuple(x.shape)} does not match the batch {tuple(mask.shape)}")
            if stats[part].gram.device != x.device:  # accumulate where the activations are
                stats[part] = stats[part].to(x.device)
            stats[part].add(x[mask.to(x.device)])

        return hook

    def stop(module: torch.nn.Module, args: object, output: object) -> None:
        raise _StopForward

    pad_id = getattr(model.config, "pad_token_id", None) or 0  # masked out; any valid id will do
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    device = next(model.parameters()).device
    was_training = model.training
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        model.eval()
        for part, module in targets.items():  # appended one by one: a failure midway still removes the first
            handles.append(module.register_forward_pre_hook(accumulate(part)))
        handles.append(layers[layer].register_forward_hook(stop))
        with torch.no_grad():
            for ids, mask in iter_batches(inputs, batch_size, pad_id):
                real[:] = [mask.bool()]
                try:
                    decoder(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                except _StopForward:
                    continue
                raise RuntimeError(f"calibration: the forward finished without running layer {layer}")
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    expected = sum(int(x.numel()) for x in inputs)
    for part, s in stats.items():
        if s.tokens != expected:
            raise RuntimeError(f"calibration: {part} saw {s.tokens} tokens, expected {expected}")
    for part, s in stats.items():
        if not torch.isfinite(s.gram).all():
            raise DataError(f"calibration: non-finite {part} activations at layer {layer} (the model overflows or is broken on these prompts)")
    return {part: s.to("cpu") for part, s in stats.items()}
