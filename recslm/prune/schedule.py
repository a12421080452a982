"""Pruning schedules: one-shot or gradual, with MLP and attention targets set separately.

A schedule is a list of cumulative targets, each a share of the *original* structure,
e.g. MLP 0.1875 → MLP 0.375 → MLP 0.375 + heads 0.5 (the paper's gradual recipe: prune a
little, re-distill, prune more). Targets are cumulative so a step's keep count never
depends on rounding in the steps before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from recslm.config import PruneConfig, PruneStepConfig
from recslm.errors import ConfigError
from recslm.prune.objective import keep_count


@dataclass(frozen=True)
class StepKeeps:
    """What one step keeps per layer; None = this step leaves that part alone."""

    mlp: int | None
    kv: int | None


def plan(cfg: PruneConfig) -> list[PruneStepConfig]:
    """The steps of ``cfg``: its explicit ``schedule``, or ``steps`` equal steps to the fractions."""
    if cfg.schedule:
        steps = list(cfg.schedule)
        for i, (a, b) in enumerate(zip(steps, steps[1:]), start=1):
            if b.mlp_fraction < a.mlp_fraction or b.heads_fraction < a.heads_fraction:
                raise ConfigError(f"prune.schedule[{i}]: targets are cumulative and cannot go down ({a.model_dump()} -> {b.model_dump()})")
        if steps[-1].mlp_fraction == 0 and steps[-1].heads_fraction == 0:
            raise ConfigError("prune.schedule: every target is 0, nothing to prune")
        return steps
    if cfg.mlp_fraction == 0 and cfg.heads_fraction == 0:
        raise ConfigError("prune.enabled is true but prune.mlp_fraction and prune.heads_fraction are 0 (and no prune.schedule): nothing to prune")
    n = cfg.steps
    return [PruneStepConfig(mlp_fraction=cfg.mlp_fraction * (i + 1) / n, heads_fraction=cfg.heads_fraction * (i + 1) / n) for i in range(n)]


def step_keeps(steps: list[PruneStepConfig], index: int, mlp_total: int, kv_total: int, align: int) -> StepKeeps:
    """Keep counts of step ``index`` against the original widths (None where the target did not move)."""
    step = steps[index]
    before = steps[index - 1] if index else PruneStepConfig()
    mlp = kv = None
    if step.mlp_fraction > before.mlp_fraction:
        mlp = keep_count(mlp_total, step.mlp_fraction, align, field=f"prune step {index} mlp_fraction")
    if step.heads_fraction > before.heads_fraction:
        kv = keep_count(kv_total, step.heads_fraction, 1, field=f"prune step {index} heads_fraction")
    return StepKeeps(mlp, kv)
