"""Will the final student be quantizable? Answered from configs before anything trains.

The W4A16 schemes need every quantized layer's input width to be a multiple of
``quantize.group_size``. Those widths are known before the run: the hidden size (q/k/v,
gate/up), the attention width ``heads × head_dim`` (o_proj) and the MLP width (down_proj),
the last two after the pruning schedule. A run that would fail at its very last stage
(after an hour of training) fails here instead, naming the student and the layer.

The same widths decide whether the fleet can shard the final model over
``serve.tensor_parallel`` GPUs (:func:`check_shardable`): SGLang splits the MLP width and
the query heads evenly over the ranks and gives each rank whole KV heads (or copies of one).
"""

from __future__ import annotations

import json
from pathlib import Path

from recslm.config import PipelineConfig, PruneConfig, StudentSpec
from recslm.errors import ConfigError
from recslm.prune.objective import keep_count
from recslm.prune.schedule import plan
from recslm.quantize.recipes import GROUPED_SCHEMES


def _shape(spec: StudentSpec) -> dict[str, int]:
    if spec.arch is not None:
        a = spec.arch
        kv = a.num_kv_heads or a.num_heads
        return {
            "hidden": a.hidden_size, "intermediate": a.intermediate_size, "heads": a.num_heads, "kv": kv,
            "head_dim": a.head_dim or a.hidden_size // a.num_heads, "experts": a.num_experts if a.family == "mixtral" else 0,
        }  # fmt: skip
    path = Path(spec.path) / "config.json"
    try:
        c = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"students.{spec.name}.path: cannot read {path} ({exc})") from exc
    heads = int(c["num_attention_heads"])
    return {
        "hidden": int(c["hidden_size"]), "intermediate": int(c["intermediate_size"]), "heads": heads,
        "kv": int(c.get("num_key_value_heads") or heads), "head_dim": int(c.get("head_dim") or c["hidden_size"] // heads),
        "experts": int(c.get("num_local_experts") or 0),
    }  # fmt: skip


def final_widths(shape: dict[str, int], prune: PruneConfig | None) -> list[dict[str, int]]:
    """Input widths of the quantized layers of the final model: one dict per possible outcome
    (with ``prune.parts: auto`` the profile may leave a part unpruned, so both are possible)."""
    outcomes = [(shape["intermediate"], shape["kv"])]
    if prune is not None and prune.enabled:
        last = plan(prune)[-1]
        mlp = keep_count(shape["intermediate"], last.mlp_fraction, prune.align) if last.mlp_fraction else shape["intermediate"]
        kv = keep_count(shape["kv"], last.heads_fraction, 1) if last.heads_fraction else shape["kv"]
        outcomes = [(mlp, kv)] if prune.parts == "config" else [(a, b) for a in {mlp, shape["intermediate"]} for b in {kv, shape["kv"]}]
    per_kv = shape["heads"] // shape["kv"]
    widths = [{"q/k/v/gate/up_proj": shape["hidden"], "o_proj": kv * per_kv * shape["head_dim"], "down_proj": mlp} for mlp, kv in outcomes]
    if shape["experts"]:  # MoE experts are fused 3-D tensors in transformers 5, not Linear layers: not quantized
        for w in widths:
            del w["down_proj"]
    return widths


def check_quantizable(config: PipelineConfig) -> dict[str, list[dict[str, int]]]:
    """Raise if a student, after its planned pruning, could not be quantized with the configured
    W4A16 group size; else return the widths checked per student (none without a grouped scheme)."""
    q = config.quantize
    if not q.enabled or not set(q.schemes) & set(GROUPED_SCHEMES):
        return {}
    checked = {spec.name: final_widths(_shape(spec), config.prune) for spec in config.students}
    problems = [
        f"{name} {layer} ({width})" for name, outcomes in checked.items() for widths in outcomes for layer, width in widths.items() if width % q.group_size
    ]
    if problems:
        raise ConfigError(
            f"quantize.group_size: {q.group_size} must divide the input width of every quantized layer of the final student; "
            f"after the planned pruning these would not: {', '.join(dict.fromkeys(problems))}. "
            "Pick a group size that divides them, or set prune.align to a multiple of it"
        )
    return checked


def check_shardable(config: PipelineConfig) -> dict[str, list[dict[str, int]]]:
    """Raise if a student, after its planned pruning, could not be served with
    ``serve.tensor_parallel`` ranks; else return the (MLP width, query heads, KV heads) checked
    per student. Pruning removes whole KV groups, so the head counts move with the KV count."""
    tp = config.serve.tensor_parallel
    if not config.serve.enabled or tp == 1:
        return {}
    checked: dict[str, list[dict[str, int]]] = {}
    problems: list[str] = []
    for spec in config.students:
        shape = _shape(spec)
        per_kv = shape["heads"] // shape["kv"]
        outcomes = []
        for widths in final_widths(shape, config.prune):
            kv = widths["o_proj"] // (per_kv * shape["head_dim"])
            outcome = {"mlp": widths.get("down_proj", shape["intermediate"]), "heads": kv * per_kv, "kv_heads": kv}
            outcomes.append(outcome)
            if outcome["mlp"] % tp:
                problems.append(f"{spec.name} MLP width {outcome['mlp']} (mlp.down_proj input)")
            if outcome["heads"] % tp:
                problems.append(f"{spec.name} attention heads {outcome['heads']}")
            if kv % tp and tp % kv:
                problems.append(f"{spec.name} KV heads {kv}")
        checked[spec.name] = outcomes
    if problems:
        raise ConfigError(
            f"serve.tensor_parallel: {tp} ranks cannot shard the final student evenly; after the planned pruning: "
            f"{', '.join(dict.fromkeys(problems))}. Use a tensor_parallel that divides them, or set prune.align to a multiple of it"
            " (and prune KV groups in multiples of it)"
        )
    return checked
