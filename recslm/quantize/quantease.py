"""QuantEase (Behdin et al., 2023): layer-wise quantization by cyclic coordinate descent.

The layer objective is ``f(Ŵ) = ‖XWᵀ − XŴᵀ‖² = tr((W − Ŵ) Σ (W − Ŵ)ᵀ)`` with ``Σ = XᵀX`` the
calibration inputs' Gram matrix and ``Ŵ`` restricted to the layer's quantization grid.
Fixing every column but ``j``, ``f`` is, in each row separately, a 1-D quadratic
``Σ_jj (ŵ − t)²`` plus a constant, with the unconstrained minimizer
``t = W_j + r / Σ_jj`` where ``r = Σ_{k≠j} (W − Ŵ)_k Σ_kj``. The grid's nearest point to
``t`` is therefore the exact coordinate minimizer: one column update never increases ``f``,
needs no matrix inverse (unlike GPTQ/OBS), and updates all output rows at once.

Bookkeeping: ``P = (W − Ŵ) Σ`` gives every ``r`` (``r = P_j − Δ_j Σ_jj``). Changing column
``j`` by ``d`` changes ``P`` by the rank-1 ``d Σ_j``; to stay matrix-multiply bound, only the
current block of columns is updated per column and the rest of ``P`` once per block
(one GEMM), as GPTQ does with its lazy batch updates. A sweep so costs about one
``out × in × in`` multiply, like computing ``P`` from scratch; ``P`` is computed once and
carried across sweeps (its float32 drift stays far below the objective's changes; the
tests check the decrease sweep by sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recslm.errors import ConfigError
from recslm.quantize.grid import Grid


def objective(weight: torch.Tensor, quantized: torch.Tensor, gram: torch.Tensor) -> float:
    """``tr((W − Ŵ) Σ (W − Ŵ)ᵀ)``, accumulated in float64."""
    delta = (weight - quantized).double()
    return float(((delta @ gram.double()) * delta).sum())


def relative_error(weight: torch.Tensor, quantized: torch.Tensor, gram: torch.Tensor) -> float:
    """The objective relative to the layer's output energy ``tr(W Σ Wᵀ)`` (0 = exact)."""
    w = weight.double()
    energy = float(((w @ gram.double()) * w).sum())
    return objective(weight, quantized, gram) / energy if energy > 0 else 0.0


@dataclass
class QuantEaseResult:
    weight: torch.Tensor  # on the grid, in the input weight's dtype
    objectives: list[float] = field(default_factory=list)  # at the start, then after each sweep
    sweeps: int = 0  # sweeps run (fewer than asked when a sweep changed nothing)


def _check(weight: torch.Tensor, gram: torch.Tensor, grid: Grid, init: torch.Tensor | None, sweeps: int, block_size: int, tol: float) -> None:
    out, columns = weight.shape
    if gram.shape != (columns, columns):
        raise ConfigError(f"quantease: Σ is {tuple(gram.shape)}, expected {columns} × {columns} for a weight with {columns} input columns")
    if (grid.scale.shape[0], grid.columns) != (out, columns):
        raise ConfigError(f"quantease: the grid covers {grid.scale.shape[0]} × {grid.columns}, the weight is {out} × {columns}")
    if init is not None and init.shape != weight.shape:
        raise ConfigError(f"quantease: init {tuple(init.shape)} must have the weight's shape {tuple(weight.shape)}")
    if sweeps < 1 or block_size < 1:
        raise ConfigError(f"quantease: sweeps ({sweeps}) and block_size ({block_size}) must be >= 1")
    if not 0 <= tol < 1:
        raise ConfigError(f"quantease: tol ({tol}) must be in [0, 1)")


@torch.no_grad()
def quantease(
    weight: torch.Tensor,
    gram: torch.Tensor,
    grid: Grid,
    *,
    init: torch.Tensor | None = None,
    sweeps: int = 20,
    tol: float = 0.0,
    block_size: int = 128,
    dtype: torch.dtype = torch.float32,
) -> QuantEaseResult:
    """Quantize ``weight`` (out × in) onto ``grid`` minimizing ``tr((W − Ŵ) Σ (W − Ŵ)ᵀ)``.

    ``init`` is the starting point (e.g. GPTQ's result on the same grid); empty means
    round-to-nearest. Each sweep visits the columns in order; it stops early once a sweep
    changes nothing (a fixed point: further sweeps would not either) or lowers the
    objective by less than ``tol`` relative to its value before the sweep (the gains
    shrink geometrically; later sweeps cost as much as the first). ``dtype`` is the
    working precision (float64 makes the monotone decrease exact to the last bit).
    """
    _check(weight, gram, grid, init, sweeps, block_size, tol)
    grid = grid.to(dtype)
    w = weight.to(dtype)
    sigma = gram.to(dtype)
    q = grid.project(w) if init is None else grid.project(init.to(dtype))  # project: an init off the grid is put on it
    out, columns = w.shape
    result = QuantEaseResult(weight=q, objectives=[objective(w, q, sigma)])
    # column-major working copies: column j of W, Ŵ and P is row j here, contiguous in memory
    wt, qt = w.T.contiguous(), q.T.contiguous()
    pt = sigma @ (wt - qt)  # Pᵀ = Σ (W − Ŵ)ᵀ, Σ symmetric
    scales, zeros = grid.column_parameters()
    diag = sigma.diagonal().tolist()
    for _ in range(sweeps):
        changed = False
        for start in range(0, columns, block_size):
            end = min(start + block_size, columns)
            changes = torch.zeros(end - start, out, dtype=dtype)
            for j in range(start, end):
                h = diag[j]
                # W_j + r/h with r = P_j − Δ_j h and Δ_j = W_j − Ŵ_j simplifies to Ŵ_j + P_j/h;
                # an input that is always zero (h = 0): any value is optimal, keep the nearest
                target = qt[j] + pt[j] / h if h > 0 else wt[j]
                new = grid.round_values(target, scales[j], zeros[j])
                d = qt[j] - new  # the change of column j of W − Ŵ
                qt[j] = new
                changes[j - start] = d
                pt[start:end].addr_(sigma[start:end, j], d)
            if changes.any():
                changed = True
                if end < columns:
                    pt[end:].addmm_(sigma[end:, start:end], changes)
                if start > 0:
                    pt[:start].addmm_(sigma[:start, start:end], changes)
        result.sweeps += 1
        q = qt.T
        before, after = result.objectives[-1], objective(w, q, sigma)
        result.objectives.append(after)
        if not changed or before - after <= tol * before:
            break
    result.weight = qt.T.contiguous().to(weight.dtype)
    return result
