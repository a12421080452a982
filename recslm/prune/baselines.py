"""Baseline structured pruning scores, judged on the shared reconstruction objective.

Each baseline ranks input-column groups of one linear layer (W: [out, in]) by a cheap
importance score, keeps the top ``keep`` groups, and optionally refits the kept columns by
least squares. They exist to be compared with the objective-driven pruner on the same
(W, H) per layer, so the error of every method is measured by
:func:`recslm.prune.objective.reconstruction_error` with the same damped H.

- magnitude: ‖W_{:,G}‖_F, weights only (data-free reference point);
- wanda: Σ_{j∈G} (Σ_o |W_oj|)·‖X_j‖₂, the structured form of Wanda's |W|·‖X‖;
- variance: Σ_{j∈G} var(X_j)·‖W_{:,j}‖², FLAP's fluctuation: how much output varies
  with the column (a constant column can be folded into a bias, so it matters little).

Scores use the *undamped* statistics (a dead column must score exactly 0); the error uses
the damped H, like every other method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from recslm.errors import ConfigError, DataError
from recslm.prune.calibration import LayerStats
from recslm.prune.objective import Groups, damp, reconstruction_error, refit

Method = Literal["magnitude", "wanda", "variance"]
METHODS: tuple[str, ...] = get_args(Method)


def _check(weight: torch.Tensor, groups: Groups, stats: LayerStats | None = None) -> torch.Tensor:
    """W in float64 after checking that W, the groups and the statistics describe the same columns."""
    if weight.dim() != 2 or weight.shape[1] != groups.width:
        raise ConfigError(f"weight of shape {tuple(weight.shape)} does not have the {groups.width} input columns of {groups}")
    if stats is not None and stats.width != groups.width:
        raise ConfigError(f"statistics over {stats.width} columns do not match the weight's {groups.width} input columns")
    return weight.detach().to(torch.float64)


def _per_group(column_scores: torch.Tensor, groups: Groups) -> torch.Tensor:
    """Sum per-column scores over each group (groups are consecutive column blocks)."""
    return column_scores.reshape(groups.count, groups.size).sum(dim=1)


def magnitude_scores(weight: torch.Tensor, groups: Groups) -> torch.Tensor:
    """[groups.count] Frobenius norm of each group's columns of W."""
    w = _check(weight, groups)
    return _per_group(w.square().sum(dim=0), groups).sqrt()


def wanda_scores(weight: torch.Tensor, stats: LayerStats, groups: Groups) -> torch.Tensor:
    """[groups.count] Σ_{j∈G} (Σ_o |W_oj|)·sqrt(H_jj): weight mass times input norm per column."""
    w = _check(weight, groups, stats)
    input_norm = stats.gram.to(torch.float64).diagonal().clamp_min(0.0).sqrt()
    return _per_group(w.abs().sum(dim=0) * input_norm, groups)


def variance_scores(weight: torch.Tensor, stats: LayerStats, groups: Groups) -> torch.Tensor:
    """[groups.count] Σ_{j∈G} var(X_j)·‖W_{:,j}‖² (population variance over calibration tokens)."""
    w = _check(weight, groups, stats)
    return _per_group(stats.variance() * w.square().sum(dim=0), groups)


def select_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Sorted indices of the ``keep`` highest scores; equal scores prefer the lower index,
    so the choice is deterministic."""
    scores = scores.detach().reshape(-1)
    if not 1 <= keep <= scores.numel():
        raise ConfigError(f"keep={keep} must be between 1 and the number of groups ({scores.numel()})")
    if not torch.isfinite(scores).all():
        raise DataError("pruning scores are not all finite (NaN or inf in the weights or calibration statistics)")
    # a stable descending sort keeps equal scores in index order
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:keep].sort().values


def _scores(method: str, weight: torch.Tensor, stats: LayerStats, groups: Groups) -> torch.Tensor:
    if method == "magnitude":
        return magnitude_scores(weight, groups)
    if method == "wanda":
        return wanda_scores(weight, stats, groups)
    if method == "variance":
        return variance_scores(weight, stats, groups)
    raise ConfigError(f"unknown baseline pruning method {method!r}; expected one of {list(METHODS)}")


@dataclass
class BaselineResult:
    """What a baseline keeps and how well: ``error`` = f(S, Ŵ) with the damped H, and
    ``relative_error`` = error / ‖X Wᵀ‖² (0 perfect, 1 as bad as outputting zero).

    ``new_weight`` ([out, |keep_cols|], float64) is the least-squares refit of the kept
    columns, or None when the kept columns keep their original weights.
    """

    keep_groups: torch.Tensor
    keep_cols: torch.Tensor
    new_weight: torch.Tensor | None
    error: float
    relative_error: float


def prune_baseline(
    method: Method,
    weight: torch.Tensor,
    stats: LayerStats,
    groups: Groups,
    keep: int,
    *,
    refit_weights: bool,
    ridge: float,
) -> BaselineResult:
    """Keep the ``keep`` best groups by ``method`` and score the result on the shared objective."""
    if not ridge >= 0.0:
        raise ConfigError(f"ridge must be >= 0, got {ridge}")
    _check(weight, groups, stats)
    keep_groups = select_top(_scores(method, weight, stats, groups), keep)
    keep_cols = groups.columns(keep_groups)
    h = damp(stats.gram, ridge)
    new_weight = None
    if refit_weights:
        try:
            new_weight = refit(weight, h, keep_cols)
        except torch.linalg.LinAlgError as exc:
            raise DataError(f"{method}: the kept columns' Gram block is singular (dead or collinear inputs); use ridge > 0") from exc
    error = reconstruction_error(weight, h, keep_cols, new_weight)
    # keeping no column outputs zero, so its error is the output energy ‖X Wᵀ‖² = tr(W H Wᵀ)
    total = reconstruction_error(weight, h, keep_cols[:0])
    return BaselineResult(keep_groups, keep_cols, new_weight, error, error / total if total > 0 else 0.0)
