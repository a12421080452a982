"""One structured-pruning step of a whole model: layer by layer, then physical slicing.

For each decoder layer, in order:
1. calibrate its attention output projection (``o_proj``) on the model *as pruned so
   far* (earlier layers already masked), choose the KV groups to keep with the configured
   method, and mask the rest in place (writing the refit weights, if any);
2. recalibrate the same layer's MLP (its input now comes from the pruned attention),
   choose the neurons to keep, mask.
Then every layer is sliced to the kept structure (the same counts in every layer, so
the result is a standard config). Feeding each layer the outputs of the already-pruned
layers lets later layers' refits compensate for earlier layers' errors.

The per-layer records (objective after greedy and after local search for OSSCAR, the
final reconstruction error, seconds) are what the prune stage logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from recslm.errors import ConfigError
from recslm.models.factory import count_parameters
from recslm.models.surgery import decoder_layers, head_layout, mask_heads, mask_mlp, mlp_width, slice_heads, slice_mlp
from recslm.prune.baselines import prune_baseline
from recslm.prune.calibration import LayerStats, collect_layer_stats
from recslm.prune.objective import Groups, kv_groups, neuron_groups
from recslm.prune.osscar import osscar

Method = Literal["osscar", "magnitude", "wanda", "variance"]
Part = Literal["mlp", "attn"]


@dataclass
class LayerRecord:
    layer: int
    part: Part
    groups: int  # before this step
    kept: int
    method: str
    error: float  # ‖X Wᵀ − X Ŵᵀ‖² on this layer's calibration inputs (ridge-damped H)
    relative_error: float  # error / ‖X Wᵀ‖²
    seconds: float
    error_greedy: float | None = None  # OSSCAR only: after greedy, after local search
    error_local: float | None = None
    swaps: int = 0


@dataclass
class PruneResult:
    records: list[LayerRecord]
    params_before: int
    params_after: int
    config: dict[str, int] = field(default_factory=dict)  # intermediate_size, num_key_value_heads, ...

    def totals(self) -> dict[str, float]:
        """Summed reconstruction error per part and the mean relative error: one line per step."""
        out: dict[str, float] = {"params_before": self.params_before, "params_after": self.params_after}
        for part in ("mlp", "attn"):
            rows = [r for r in self.records if r.part == part]
            if rows:
                out[f"{part}_error"] = sum(r.error for r in rows)
                out[f"{part}_relative_error_mean"] = sum(r.relative_error for r in rows) / len(rows)
                out[f"{part}_seconds"] = sum(r.seconds for r in rows)
        return out

    def dump(self) -> dict[str, Any]:
        return {"records": [asdict(r) for r in self.records], "params_before": self.params_before,
                "params_after": self.params_after, "config": self.config, "totals": self.totals()}  # fmt: skip


@dataclass(frozen=True)
class Solver:
    """How one layer's groups are chosen: the method and its settings."""

    method: Method = "osscar"
    ridge: float = 1e-4
    refit: bool = True
    local_search_iters: int = 100

    def solve(self, weight: torch.Tensor, stats: LayerStats, groups: Groups, keep: int) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        """Kept groups, the new weight of their columns (None: keep the old ones) and the record fields."""
        if self.method == "osscar":
            r = osscar(weight, stats.gram, groups, keep, ridge=self.ridge, local_search_iters=self.local_search_iters, refit_weights=self.refit)
            fields = dict(error=r.error, relative_error=r.relative_error, error_greedy=r.error_greedy, error_local=r.error_local, swaps=r.swaps)
            return r.keep_groups, r.new_weight, fields
        b = prune_baseline(self.method, weight, stats, groups, keep, refit_weights=self.refit, ridge=self.ridge)
        return b.keep_groups, b.new_weight, dict(error=b.error, relative_error=b.relative_error)


def prune_step(
    model: PreTrainedModel,
    inputs: Sequence[torch.Tensor],
    *,
    mlp_keep: int | None,
    kv_keep: int | None,
    solver: Solver,
    align: int = 1,
    batch_size: int = 8,
    on_layer: Callable[[LayerRecord], None] | None = None,
) -> PruneResult:
    """Prune ``model`` in place to ``mlp_keep`` neurons and ``kv_keep`` KV groups per layer (None: leave that part)."""
    if mlp_keep is None and kv_keep is None:
        raise ConfigError("prune: nothing to prune in this step (no MLP and no head target)")
    params_before = count_parameters(model)
    records: list[LayerRecord] = []
    keep_kv: dict[int, torch.Tensor] = {}
    keep_mlp: dict[int, torch.Tensor] = {}

    def run(layer: int, part: Part, weight: torch.Tensor, groups: Groups, keep: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        start = time.perf_counter()
        stats = collect_layer_stats(model, inputs, layer, batch_size=batch_size, parts=(part,))[part]
        kept, new_weight, fields = solver.solve(weight.detach(), stats, groups, keep)
        record = LayerRecord(layer, part, groups.count, keep, solver.method, seconds=round(time.perf_counter() - start, 3), **fields)
        records.append(record)
        if on_layer is not None:
            on_layer(record)
        return kept, None if new_weight is None else new_weight.to(weight.dtype)

    for layer, block in enumerate(decoder_layers(model)):
        if kv_keep is not None:
            shape = head_layout(model, layer)
            groups = kv_groups(shape.num_heads, shape.num_kv_heads, shape.head_dim)
            _check_keep(kv_keep, groups.count, "KV groups", layer)
            keep_kv[layer], o_weight = run(layer, "attn", block.self_attn.o_proj.weight, groups, kv_keep)
            mask_heads(model, layer, keep_kv[layer], o_weight)
        if mlp_keep is not None:
            groups = neuron_groups(mlp_width(model, layer))
            _check_keep(mlp_keep, groups.count, "MLP neurons", layer)
            keep_mlp[layer], down_weight = run(layer, "mlp", block.mlp.down_proj.weight, groups, mlp_keep)
            mask_mlp(model, layer, keep_mlp[layer], down_weight)
    # the masks hold the refits: slicing without weights keeps them
    if keep_kv:
        slice_heads(model, keep_kv)
    if keep_mlp:
        slice_mlp(model, keep_mlp, align=align)
    cfg = model.config
    shape = {k: int(getattr(cfg, k)) for k in ("intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim") if getattr(cfg, k, None)}
    return PruneResult(records, params_before, count_parameters(model), shape)


def _check_keep(keep: int, total: int, what: str, layer: int) -> None:
    if not 1 <= keep <= total:
        raise ConfigError(f"prune: keep {keep} {what} in layer {layer}, which has {total}")
