"""The integer quantization grid of one linear layer: which values each weight may take.

A weight ``w`` in row ``r`` and column ``c`` is stored as an integer ``q`` in
``[qmin, qmax]`` and read back as ``(q - z) * s`` with the scale ``s`` and zero point ``z``
of (row ``r``, group ``c // group_size``). Channel-wise quantization is the special case of
one group spanning all columns. The formula is compressed-tensors' (``x / s + z``, rounded
half to even, clamped), so a weight projected here packs to the same integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recslm.errors import ConfigError


@dataclass(frozen=True)
class Grid:
    """Per-(row, group) scales and zero points, and the integer range, of one ``out × in`` weight."""

    scale: torch.Tensor  # (out, groups)
    zero_point: torch.Tensor  # (out, groups), integral values
    group_size: int  # columns per group
    qmin: int
    qmax: int

    def __post_init__(self) -> None:
        if self.scale.dim() != 2 or self.scale.shape != self.zero_point.shape:
            raise ConfigError(f"grid: scale {tuple(self.scale.shape)} and zero point {tuple(self.zero_point.shape)} must be equal 2-D (rows × groups)")
        if self.group_size < 1 or self.qmin >= self.qmax:
            raise ConfigError(f"grid: group_size {self.group_size} must be >= 1 and qmin {self.qmin} < qmax {self.qmax}")

    @property
    def columns(self) -> int:
        return self.scale.shape[1] * self.group_size

    def to(self, dtype: torch.dtype) -> Grid:
        return Grid(self.scale.to(dtype), self.zero_point.to(dtype), self.group_size, self.qmin, self.qmax)

    def round_values(self, values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """``values`` to the nearest grid point of the given (broadcastable) scales and zero points."""
        q = torch.clamp(torch.round(values / scale + zero), self.qmin, self.qmax)
        return (q - zero) * scale

    def project_column(self, values: torch.Tensor, column: int) -> torch.Tensor:
        """The nearest grid value of every row's entry in ``column`` (a vector of length ``out``)."""
        group = column // self.group_size
        return self.round_values(values, self.scale[:, group], self.zero_point[:, group])

    def column_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scales and zero points per column, ``in × out`` and contiguous: row ``j`` serves column ``j``."""
        scale = self.scale.repeat_interleave(self.group_size, dim=1).T.contiguous()
        zero = self.zero_point.repeat_interleave(self.group_size, dim=1).T.contiguous()
        return scale, zero

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """Round-to-nearest of a whole ``out × in`` matrix on this grid."""
        if weight.shape != (self.scale.shape[0], self.columns):
            raise ConfigError(f"grid: weight {tuple(weight.shape)} does not match the grid's {self.scale.shape[0]} rows × {self.columns} columns")
        scale = self.scale.repeat_interleave(self.group_size, dim=1)
        zero = self.zero_point.repeat_interleave(self.group_size, dim=1)
        return self.round_values(weight, scale, zero)

    def integers(self, weight: torch.Tensor) -> torch.Tensor:
        """The stored integers of an on-grid weight (for checks: on-grid means these are whole numbers)."""
        scale = self.scale.repeat_interleave(self.group_size, dim=1)
        zero = self.zero_point.repeat_interleave(self.group_size, dim=1)
        return weight / scale + zero


def symmetric_grid(weight: torch.Tensor, bits: int, group_size: int | None = None) -> Grid:
    """A min-max symmetric grid for ``weight`` (zero point 0): the default W4A16/W8 observer's grid,
    for tests and benchmarks that need a grid without llm-compressor."""
    out, columns = weight.shape
    size = group_size or columns
    if columns % size:
        raise ConfigError(f"grid: {columns} input columns are not a multiple of group_size {size}")
    qmax = 2 ** (bits - 1) - 1
    qmin = -(2 ** (bits - 1))
    absmax = weight.reshape(out, columns // size, size).abs().amax(dim=2)
    scale = torch.where(absmax > 0, absmax / ((qmax - qmin) / 2), torch.ones_like(absmax))
    return Grid(scale, torch.zeros_like(scale), size, qmin, qmax)
