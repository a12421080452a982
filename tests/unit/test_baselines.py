"""Baseline pruning scores against hand computations, and their results on the shared objective."""

from __future__ import annotations

import math

import pytest
import torch

from recslm.errors import ConfigError, DataError
from recslm.prune.baselines import (
    METHODS,
    magnitude_scores,
    prune_baseline,
    select_top,
    variance_scores,
    wanda_scores,
)
from recslm.prune.calibration import LayerStats
from recslm.prune.objective import Groups, damp, kv_groups, neuron_groups, reconstruction_error, refit, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


def example(seed: int, out: int = 6, width: int = 8, tokens: int = 50):
    """W [out, width] and X [tokens, width] with columns of different scales, means and correlations."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, width, generator=g, dtype=torch.float64)
    x = torch.randn(tokens, width, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3.0, width, dtype=torch.float64)
    x = x + torch.randn(width, generator=g, dtype=torch.float64)  # nonzero means: variance ≠ second moment
    x[:, 1] = 0.7 * x[:, 0] + 0.1 * x[:, 1]  # correlated inputs make refit matter
    return w, x


def stats_of(x: torch.Tensor) -> LayerStats:
    stats = LayerStats.zeros(x.shape[1])
    stats.add(x)
    return stats


def hand_scores(method: str, w: torch.Tensor, x: torch.Tensor, groups: Groups) -> list[float]:
    """The definitions, column by column in plain Python loops."""
    out = []
    for g in range(groups.count):
        cols = range(g * groups.size, (g + 1) * groups.size)
        if method == "magnitude":
            out.append(math.sqrt(sum(float(w[o, j]) ** 2 for o in range(w.shape[0]) for j in cols)))
        elif method == "wanda":
            out.append(sum(sum(abs(float(w[o, j])) for o in range(w.shape[0])) * math.sqrt(sum(float(v) ** 2 for v in x[:, j])) for j in cols))
        else:
            out.append(sum(float(x[:, j].var(unbiased=False)) * sum(float(w[o, j]) ** 2 for o in range(w.shape[0])) for j in cols))
    return out


def scores(method: str, w: torch.Tensor, stats: LayerStats, groups: Groups) -> torch.Tensor:
    if method == "magnitude":
        return magnitude_scores(w, groups)
    return {"wanda": wanda_scores, "variance": variance_scores}[method](w, stats, groups)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("groups", [neuron_groups(8), kv_groups(num_heads=4, num_kv_heads=2, head_dim=2), Groups(4, 2)])
def test_scores_match_hand_computation(method, groups):
    """With groups of size > 1 (KV groups of o_proj) each score aggregates exactly its group's columns."""
    w, x = example(0)
    got = scores(method, w.float(), stats_of(x), groups)  # float32 weights, as in a model
    want = hand_scores(method, w.float().double(), x, groups)
    assert got.dtype == torch.float64 and got.shape == (groups.count,)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10)


def test_kv_group_scores_are_sums_of_their_columns():
    w, x = example(1)
    stats = stats_of(x)
    per_column = {m: scores(m, w, stats, neuron_groups(8)) for m in ("wanda", "variance")}
    grouped = kv_groups(num_heads=4, num_kv_heads=2, head_dim=2)  # 2 groups × 4 columns
    for m, col in per_column.items():
        assert torch.allclose(scores(m, w, stats, grouped), torch.stack([col[:4].sum(), col[4:].sum()]), rtol=1e-12)
    mag = magnitude_scores(w, neuron_groups(8))
    assert torch.allclose(magnitude_scores(w, grouped), torch.stack([mag[:4].norm(), mag[4:].norm()]), rtol=1e-12)


def test_select_top_ties_prefer_the_lower_index():
    s = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0])
    assert select_top(s, 1).tolist() == [1]
    assert select_top(s, 2).tolist() == [1, 2]
    assert select_top(s, 3).tolist() == [1, 2, 4]
    assert select_top(s, 4).tolist() == [1, 2, 3, 4]
    assert select_top(torch.zeros(4), 2).tolist() == [0, 1]
    assert select_top(torch.tensor([0.5, 0.1, 0.9]), 2).dtype == torch.long


def test_select_top_errors():
    with pytest.raises(ConfigError, match="keep=0"):
        select_top(torch.ones(3), 0)
    with pytest.raises(ConfigError, match="keep=4"):
        select_top(torch.ones(3), 4)
    with pytest.raises(DataError, match="finite"):
        select_top(torch.tensor([1.0, float("nan"), 2.0]), 1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("groups", [neuron_groups(8), Groups(2, 4)])
def test_refit_never_increases_the_error(seed, method, groups):
    w, x = example(seed)
    stats = stats_of(x)
    keep = max(1, groups.count // 2)
    plain = prune_baseline(method, w, stats, groups, keep, refit_weights=False, ridge=0.01)
    fitted = prune_baseline(method, w, stats, groups, keep, refit_weights=True, ridge=0.01)
    assert torch.equal(plain.keep_groups, fitted.keep_groups)  # refit changes weights, not the choice
    assert plain.new_weight is None and fitted.new_weight.shape == (w.shape[0], keep * groups.size)
    assert fitted.error <= plain.error * (1 + 1e-12) + 1e-12
    assert 0.0 <= fitted.relative_error <= plain.relative_error + 1e-12


def test_result_uses_the_shared_objective_with_the_damped_gram():
    w, x = example(2)
    stats = stats_of(x)
    groups = kv_groups(num_heads=4, num_kv_heads=4, head_dim=2)  # 4 groups of 2 columns
    result = prune_baseline("wanda", w, stats, groups, 2, refit_weights=True, ridge=0.05)
    h = damp(x.T @ x, 0.05)
    assert torch.equal(result.keep_groups, select_top(wanda_scores(w, stats, groups), 2))
    assert torch.equal(result.keep_cols, groups.columns(result.keep_groups))
    assert torch.allclose(result.new_weight, refit(w, h, result.keep_cols), rtol=1e-10)
    assert result.error == pytest.approx(reconstruction_error(w, h, result.keep_cols, result.new_weight), rel=1e-10)
    assert result.relative_error == pytest.approx(relative_error(w, h, result.keep_cols, result.new_weight), rel=1e-10)


def test_a_dead_input_column_scores_lowest():
    w, x = example(3)
    x[:, 5] = 0.0  # a neuron that never fires on the calibration data
    stats = stats_of(x)
    for method in ("wanda", "variance"):
        s = scores(method, w, stats, neuron_groups(8))
        assert s[5] == 0.0 and int(s.argmin()) == 5 and (s[torch.arange(8) != 5] > 0).all()
        assert 5 not in prune_baseline(method, w, stats, neuron_groups(8), 7, refit_weights=True, ridge=0.01).keep_groups


def test_constant_input_has_no_variance_score():
    """FLAP's view: a column that never varies carries no fluctuation (it could live in a bias)."""
    w, x = example(4)
    x[:, 2] = 3.0
    s = variance_scores(w, stats_of(x), neuron_groups(8))
    assert s[2] == pytest.approx(0.0, abs=1e-9) and int(s.argmin()) == 2


def test_errors_name_the_problem():
    w, x = example(5)
    stats = stats_of(x)
    with pytest.raises(ConfigError, match="unknown baseline pruning method 'random'"):
        prune_baseline("random", w, stats, neuron_groups(8), 4, refit_weights=False, ridge=0.01)
    with pytest.raises(ConfigError, match="input columns"):
        magnitude_scores(w, neuron_groups(6))
    with pytest.raises(ConfigError, match="statistics over 4 columns"):
        wanda_scores(w, stats_of(x[:, :4]), neuron_groups(8))
    with pytest.raises(ConfigError, match="ridge"):
        prune_baseline("wanda", w, stats, neuron_groups(8), 4, refit_weights=False, ridge=-1.0)
    x[:, 0] = 0.0
    with pytest.raises(DataError, match="ridge > 0"):  # keeping a dead column undamped: H_SS is singular
        prune_baseline("magnitude", w, stats_of(x), neuron_groups(8), 8, refit_weights=True, ridge=0.0)
