"""QuantEase inside llm-compressor: a GPTQ modifier whose layer solver continues with QuantEase.

llm-compressor already does what QuantEase needs around the solver: it runs calibration
data through the model one decoder layer at a time (each layer sees the outputs of the
layers already quantized), accumulates each linear layer's input Gram matrix, fixes the
grid (scales and zero points from the weight observer) and saves compressed-tensors. This
modifier keeps all of it and changes only the per-layer solve: GPTQ (or plain rounding)
gives the starting point on the grid, then QuantEase sweeps lower the same layer
objective on the same Gram matrix. Every layer's relative error after rounding, after
GPTQ and after QuantEase is recorded, so the comparison is on identical inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from compressed_tensors.offload import update_offload_parameter
from compressed_tensors.quantization import QuantizationStrategy
from compressed_tensors.quantization.utils.helpers import calculate_range
from llmcompressor.modifiers.gptq import GPTQModifier
from pydantic import Field, PrivateAttr

from recslm.errors import ConfigError
from recslm.quantize.grid import Grid
from recslm.quantize.quantease import quantease, relative_error


@dataclass(frozen=True)
class LayerReport:
    """One linear layer's relative reconstruction error (``tr(ΔΣΔᵀ) / tr(WΣWᵀ)``) per solver."""

    name: str
    rtn: float
    gptq: float
    quantease: float  # NaN when the scheme is GPTQ alone
    sweeps: int

    def dump(self) -> dict[str, float | int | str]:
        return asdict(self)


def module_grid(module: torch.nn.Module) -> Grid:
    """The grid llm-compressor's observer fixed for ``module`` (group, channel or tensor strategy)."""
    args = module.quantization_scheme.weights
    if args.type != "int":
        raise ConfigError(f"QuantEase needs an integer weight grid; the scheme's weights are {args.type}")
    out, columns = module.weight.shape
    scale = module.weight_scale.detach().float()
    zero = module.weight_zero_point.detach().float()
    if args.strategy == QuantizationStrategy.GROUP:
        size = int(args.group_size)
    elif args.strategy in (QuantizationStrategy.CHANNEL, QuantizationStrategy.TENSOR):
        size = columns
        scale, zero = scale.reshape(-1, 1).expand(out, 1), zero.reshape(-1, 1).expand(out, 1)
    else:
        raise ConfigError(f"QuantEase supports group, channel and tensor weight strategies, not {args.strategy}")
    qmin, qmax = calculate_range(args, "cpu")
    return Grid(scale.reshape(out, -1).contiguous(), zero.reshape(out, -1).contiguous(), size, int(qmin), int(qmax))


class LayerwiseGPTQModifier(GPTQModifier):
    """``GPTQModifier`` that records every layer's error after rounding and after GPTQ, on the
    Gram matrix GPTQ solved with; subclasses may refine the GPTQ solution in :meth:`refine`."""

    _layer_reports: list[LayerReport] = PrivateAttr(default_factory=list)

    @property
    def layer_reports(self) -> list[LayerReport]:
        return list(self._layer_reports)

    def refine(self, weight: torch.Tensor, gram: torch.Tensor, grid: Grid, gptq: torch.Tensor, rtn: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The layer's final weight on ``grid`` and the sweeps spent (GPTQ alone: its own result)."""
        return gptq, 0

    def compress_module_list(self, module_list: list[torch.nn.Module]) -> None:
        # GPTQ consumes the Gram matrices and overwrites the weights: keep both first
        originals = {m: m.weight.detach().float().clone() for m in module_list}
        grams = {m: (self._hessians[m] / self._num_samples[m]).float().clone() for m in module_list}
        super().compress_module_list(module_list)
        with torch.no_grad():
            for module in module_list:
                weight, gram, grid = originals[module], grams[module], module_grid(module)
                gptq = module.weight.detach().float().clone()  # update_offload_parameter writes in place
                rtn = grid.project(weight)
                final, sweeps = self.refine(weight, gram, grid, gptq, rtn)
                if final is not gptq:
                    update_offload_parameter(module, "weight", final.to(module.weight.dtype))
                self._layer_reports.append(
                    LayerReport(
                        name=self._module_names[module],
                        rtn=relative_error(weight, rtn, gram),
                        gptq=relative_error(weight, gptq, gram),
                        quantease=relative_error(weight, final, gram) if sweeps else float("nan"),
                        sweeps=sweeps,
                    )
                )


class QuantEaseModifier(LayerwiseGPTQModifier):
    """QuantEase coordinate descent on each layer, started from GPTQ's result or from rounding.

    :param sweeps: QuantEase sweeps per layer at most
    :param tol: stop once a sweep lowers the layer objective by less than this fraction
    :param init: ``gptq`` starts from GPTQ's result, ``rtn`` from round-to-nearest
    :param quantease_block: columns per lazy-update block of the QuantEase solver
    """

    sweeps: int = Field(20, ge=1)
    tol: float = Field(0.0, ge=0, lt=1)
    init: Literal["gptq", "rtn"] = "gptq"
    quantease_block: int = Field(128, ge=1)

    def refine(self, weight: torch.Tensor, gram: torch.Tensor, grid: Grid, gptq: torch.Tensor, rtn: torch.Tensor) -> tuple[torch.Tensor, int]:
        start = gptq if self.init == "gptq" else rtn
        result = quantease(weight, gram, grid, init=start, sweeps=self.sweeps, tol=self.tol, block_size=self.quantease_block)
        return result.weight, result.sweeps
