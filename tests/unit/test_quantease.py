"""QuantEase and the quantization grid: pure torch, no llm-compressor."""

from __future__ import annotations

import itertools

import pytest
import torch

from recslm.errors import ConfigError
from recslm.quantize.grid import Grid, symmetric_grid
from recslm.quantize.quantease import objective, quantease, relative_error


def correlated_problem(out: int = 16, columns: int = 32, rows: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and a Gram matrix of strongly correlated inputs (where GPTQ/QuantEase beat rounding)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(columns, columns, generator=g) / columns**0.5 + torch.eye(columns)
    x = torch.randn(rows, columns, generator=g) @ mixing
    x[:, : columns // 4] *= 4  # a few high-energy inputs, as real activations have
    weight = torch.randn(out, columns, generator=g)
    return weight, x.T @ x


def test_identity_gram_gives_round_to_nearest():
    weight, _ = correlated_problem()
    grid = symmetric_grid(weight, bits=4, group_size=8)
    result = quantease(weight, torch.eye(weight.shape[1]), grid, sweeps=3)
    assert torch.equal(result.weight, grid.project(weight))
    # from a different starting point on the grid, one sweep lands on rounding too
    start = grid.project(weight + 0.3 * torch.randn_like(weight))
    assert not torch.equal(start, grid.project(weight))
    moved = quantease(weight, torch.eye(weight.shape[1]), grid, init=start, sweeps=1)
    assert torch.equal(moved.weight, grid.project(weight))


@pytest.mark.parametrize("dtype,slack", [(torch.float64, 0.0), (torch.float32, 1e-6)])
def test_objective_never_increases(dtype, slack):
    weight, gram = correlated_problem(seed=1)
    grid = symmetric_grid(weight, bits=3, group_size=8)
    result = quantease(weight, gram, grid, sweeps=15, block_size=8, dtype=dtype)
    values = result.objectives
    assert len(values) == result.sweeps + 1 >= 3
    for before, after in itertools.pairwise(values):
        assert after <= before * (1 + slack)
    assert values[-1] < 0.8 * values[0]  # and it does real work over rounding on correlated inputs


def test_result_is_on_the_grid_and_in_range():
    weight, gram = correlated_problem(seed=2)
    grid = symmetric_grid(weight, bits=4, group_size=16)
    q = quantease(weight, gram, grid, sweeps=5).weight
    ints = grid.integers(q)
    assert torch.allclose(ints, ints.round(), atol=1e-4)
    assert ints.min() >= grid.qmin - 1e-4 and ints.max() <= grid.qmax + 1e-4
    assert torch.equal(grid.project(q), q)


def test_converged_point_is_coordinate_wise_optimal():
    """At a fixed point no single weight can move to another grid value and lower the objective."""
    weight, gram = (t.double() for t in correlated_problem(out=3, columns=6, rows=64, seed=3))
    grid = symmetric_grid(weight, bits=3, group_size=3)
    result = quantease(weight, gram, grid, sweeps=50, dtype=torch.float64)
    assert result.sweeps < 50  # stopped at a fixed point
    q = result.weight
    best = objective(weight, q, gram)
    for r, c in itertools.product(range(3), range(6)):
        scale = float(grid.scale[r, c // 3])
        for level in range(grid.qmin, grid.qmax + 1):
            trial = q.clone()
            trial[r, c] = level * scale
            assert objective(weight, trial, gram) >= best - 1e-9 * abs(best)


def test_block_size_does_not_change_the_result():
    weight, gram = correlated_problem(seed=4)
    grid = symmetric_grid(weight, bits=4, group_size=8)
    runs = [quantease(weight, gram, grid, sweeps=4, block_size=b, dtype=torch.float64) for b in (1, 5, 32, 1000)]
    for other in runs[1:]:
        assert torch.equal(other.weight, runs[0].weight)


def test_dead_input_column_is_rounded_not_nan():
    weight, gram = correlated_problem(seed=5)
    gram[:, 7] = 0
    gram[7, :] = 0
    grid = symmetric_grid(weight, bits=4, group_size=8)
    q = quantease(weight, gram, grid, sweeps=3).weight
    assert torch.isfinite(q).all()
    assert torch.equal(q[:, 7], grid.project(weight)[:, 7])


def test_relative_error_is_zero_for_exact_and_positive_otherwise():
    weight, gram = correlated_problem(seed=6)
    assert relative_error(weight, weight, gram) == 0.0
    assert relative_error(weight, symmetric_grid(weight, 4, 8).project(weight), gram) > 0


def test_bad_shapes_name_what_was_expected():
    weight, gram = correlated_problem()
    grid = symmetric_grid(weight, bits=4, group_size=8)
    with pytest.raises(ConfigError, match="expected 32 × 32"):
        quantease(weight, gram[:8, :8], grid)
    with pytest.raises(ConfigError, match="init"):
        quantease(weight, gram, grid, init=weight[:, :4])
    with pytest.raises(ConfigError, match="not a multiple of group_size 7"):
        symmetric_grid(weight, bits=4, group_size=7)
    with pytest.raises(ConfigError, match="rows × groups"):
        Grid(torch.ones(4), torch.zeros(4), 8, -8, 7)


def test_tolerance_stops_once_sweeps_stop_paying():
    weight, gram = correlated_problem(seed=7)
    grid = symmetric_grid(weight, bits=3, group_size=8)
    full = quantease(weight, gram, grid, sweeps=30, dtype=torch.float64)
    early = quantease(weight, gram, grid, sweeps=30, tol=0.01, dtype=torch.float64)
    assert early.sweeps < full.sweeps
    last_before, last = early.objectives[-2], early.objectives[-1]
    assert last_before - last <= 0.01 * last_before  # it stopped because the last sweep gained < 1 %
    assert all(b - a > 0.01 * b for b, a in itertools.pairwise(early.objectives[:-1]))  # and not before
    assert early.objectives == full.objectives[: len(early.objectives)]  # same path, cut short
    with pytest.raises(ConfigError, match="tol"):
        quantease(weight, gram, grid, tol=1.5)
