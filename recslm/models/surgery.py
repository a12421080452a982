"""Structured pruning of a Hugging Face decoder that keeps the architecture standard.

Two kinds of structure are removed: intermediate neurons of the dense MLP and whole
key/value groups of attention (one KV head with all the query heads that share it).
Removing whole KV groups keeps ``num_attention_heads / num_key_value_heads`` and
``head_dim`` unchanged, so the pruned model is again a plain Llama/Qwen2/Qwen3/Mistral
(or Mixtral) config that vanilla transformers, SGLang and vLLM load without recslm.

Two steps, used by layer-by-layer pruning:

* ``mask_*`` zeroes the pruned structure of one layer *in place, shapes unchanged*,
  optionally writing a least-squares refit into the kept input columns of the output
  projection. Later layers are then calibrated on the outputs of the already pruned
  earlier layers, and the model still has one config for every layer.
* ``slice_*`` physically removes the pruned structure of every layer and updates the
  config. Given the same keep sets and refit weights, the sliced model computes the
  same logits as the masked one (up to float summation order).

Why the masked model is exact: a pruned MLP neuron has zero gate and up rows, so its
activation is act(0)·0 = 0, and its down_proj column is zero as well. A pruned KV group
has zero q/k/v rows (and biases): its query is zero, so its attention logits are all
zero and the softmax is a uniform average over the visible positions — of value vectors
that are zero, so the head outputs exactly zero (RoPE and Qwen3's per-head RMSNorm both
map zero to zero). Its o_proj input columns are zeroed too, which alone already removes
the head's contribution; zeroing q/k/v in addition makes the masked parameters mirror
the sliced ones, so slicing a masked model without refit weights keeps what was written.

Errors: a model whose structure this module does not know (no ``model.model.layers``,
no separate q/k/v/o or gate/up/down projections) raises :class:`CheckpointError`; keep
sets, refit weights or ``align`` that cannot produce a standard config raise
:class:`ConfigError` naming the layer and what was expected.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recslm.errors import CheckpointError, ConfigError

Indices = torch.Tensor | Sequence[int]

_SUPPORTED = "Llama, Qwen2, Qwen3, Mistral or Mixtral"


@dataclass(frozen=True)
class HeadLayout:
    """Attention shape of one layer; KV group g = query heads g*heads_per_kv .. (g+1)*heads_per_kv-1.

    transformers maps query head h to KV head h // heads_per_kv, so the query heads of a
    group, their q_proj output rows and their o_proj input columns are all consecutive.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def heads_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def group_width(self) -> int:
        """q_proj output rows (= o_proj input columns) per KV group."""
        return self.heads_per_kv * self.head_dim

    def query_columns(self, keep_kv: torch.Tensor) -> torch.Tensor:
        """q_proj rows / o_proj columns of the given KV groups, in the given group order."""
        return _blocks(keep_kv, self.group_width)

    def kv_rows(self, keep_kv: torch.Tensor) -> torch.Tensor:
        """k_proj / v_proj rows of the given KV heads, in the given order."""
        return _blocks(keep_kv, self.head_dim)


# ---------------------------------------------------------------------------- structure


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers (``model.model.layers``) of a causal LM this module can prune."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise CheckpointError(
            f"{type(model).__name__}: unsupported model for structured pruning; expected a {_SUPPORTED} "
            "causal LM with decoder layers at model.model.layers"
        )
    return list(layers)


def head_layout(model: nn.Module, layer: int) -> HeadLayout:
    """Attention shape of ``layer``, read from its modules (the config may be stale mid-surgery)."""
    attn = _attention(model, layer)
    head_dim = int(attn.head_dim)
    num_heads = attn.q_proj.out_features // head_dim
    num_kv = attn.k_proj.out_features // head_dim
    if (
        num_heads * head_dim != attn.q_proj.out_features
        or num_kv * head_dim != attn.k_proj.out_features
        or attn.v_proj.out_features != attn.k_proj.out_features
        or attn.o_proj.in_features != attn.q_proj.out_features
        or num_kv == 0
        or num_heads % num_kv
    ):
        raise CheckpointError(
            f"layer {layer}: attention projections do not form whole heads of head_dim={head_dim} "
            f"(q_proj out {attn.q_proj.out_features}, k_proj out {attn.k_proj.out_features}, "
            f"v_proj out {attn.v_proj.out_features}, o_proj in {attn.o_proj.in_features})"
        )
    return HeadLayout(num_heads, num_kv, head_dim)


def mlp_width(model: nn.Module, layer: int) -> int:
    """Intermediate neurons of the dense MLP of ``layer``."""
    return _dense_mlp(model, layer).gate_proj.out_features


def _layer(model: nn.Module, layer: int) -> nn.Module:
    layers = decoder_layers(model)
    try:
        layer = operator.index(layer)  # also numpy / 0-d tensor integers
    except TypeError:
        raise ConfigError(f"layer must be an integer index, got {layer!r}") from None
    if not 0 <= layer < len(layers):
        raise ConfigError(f"layer {layer!r} is out of range: the model has {len(layers)} decoder layers (0..{len(layers) - 1})")
    return layers[layer]


def _attention(model: nn.Module, layer: int) -> nn.Module:
    attn = getattr(_layer(model, layer), "self_attn", None)
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    if attn is None or not all(isinstance(getattr(attn, n, None), nn.Linear) for n in names) or not hasattr(attn, "head_dim"):
        raise CheckpointError(
            f"layer {layer}: unsupported attention module {type(attn).__name__}; head pruning needs separate "
            f"q_proj/k_proj/v_proj/o_proj nn.Linear layers and a head_dim attribute ({_SUPPORTED})"
        )
    return attn


def _is_moe(mlp: nn.Module | None) -> bool:
    return mlp is not None and (hasattr(mlp, "experts") or hasattr(mlp, "block_sparse_moe"))


def _dense_mlp(model: nn.Module, layer: int) -> nn.Module:
    decoder = _layer(model, layer)
    mlp = getattr(decoder, "mlp", None)
    experts = getattr(model.config, "num_local_experts", None) or getattr(model.config, "num_experts", None)
    if _is_moe(mlp) or hasattr(decoder, "block_sparse_moe") or (experts or 0) > 1:
        raise ConfigError(
            f"MLP pruning of mixture-of-experts models is not supported: layer {layer} of "
            f"{type(model).__name__} has a {type(mlp or getattr(decoder, 'block_sparse_moe', None)).__name__} "
            "(experts share one intermediate_size and a router); prune attention heads only"
        )
    names = ("gate_proj", "up_proj", "down_proj")
    if mlp is None or not all(isinstance(getattr(mlp, n, None), nn.Linear) for n in names):
        raise CheckpointError(
            f"layer {layer}: unsupported MLP module {type(mlp).__name__}; neuron pruning needs "
            f"gate_proj/up_proj/down_proj nn.Linear layers ({_SUPPORTED})"
        )
    return mlp


# ---------------------------------------------------------------------------- validation


def _blocks(groups: torch.Tensor, size: int) -> torch.Tensor:
    """Indices of ``size``-wide consecutive blocks, block order preserved."""
    g = groups.reshape(-1, 1).to(torch.long)
    return (g * size + torch.arange(size, device=g.device)).reshape(-1)


def _check_keep(keep: Indices, total: int, what: str, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated keep indices sorted ascending, and the permutation that sorted them.

    Sorting keeps the surviving structure in its original order (a canonical model);
    the permutation reorders refit columns that were computed in the caller's order.
    """
    t = torch.as_tensor(keep)
    if t.dim() != 1:
        raise ConfigError(f"layer {layer}: keep must be a 1-D tensor of {what} indices, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ConfigError(f"layer {layer}: keeps zero {what}s; at least one must be kept (a standard config cannot have width 0)")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ConfigError(f"layer {layer}: keep must hold integer {what} indices, got dtype {t.dtype} (a mask? use mask.nonzero())")
    t = t.to(device="cpu", dtype=torch.long)
    bad = t[(t < 0) | (t >= total)]
    if bad.numel():
        raise ConfigError(f"layer {layer}: keep has {what} indices out of range 0..{total - 1}: {bad[:8].tolist()}")
    sorted_keep, order = torch.sort(t)
    dup = sorted_keep[1:][sorted_keep[1:] == sorted_keep[:-1]]
    if dup.numel():
        raise ConfigError(f"layer {layer}: keep has duplicated {what} indices: {torch.unique(dup)[:8].tolist()}")
    return sorted_keep, order


def _check_refit(weight: torch.Tensor, shape: tuple[int, int], name: str, layer: int) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != shape:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ConfigError(f"layer {layer}: {name} must have shape {list(shape)} ([hidden, kept columns]), got {got}")
    if not torch.isfinite(weight).all():
        raise ConfigError(f"layer {layer}: {name} has non-finite values")
    return weight


def _check_align(align: int) -> None:
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise ConfigError(f"align must be a positive integer, got {align!r}")


def _check_layers(keys: Mapping[int, object], n_layers: int, name: str, complete: bool) -> None:
    if not isinstance(keys, Mapping):
        raise ConfigError(f"{name} must map layer index -> tensor, got {type(keys).__name__}")
    unknown = sorted(k for k in keys if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n_layers)
    if unknown:
        raise ConfigError(f"{name}: unknown layer indices {unknown}; the model has {n_layers} decoder layers (0..{n_layers - 1})")
    missing = sorted(set(range(n_layers)) - set(keys))
    if complete and missing:
        raise ConfigError(
            f"{name}: no keep set for layers {missing}; every layer needs one, because a standard "
            "config has one width for all layers"
        )


def _check_equal_counts(counts: dict[int, int], what: str, align: int) -> int:
    first = min(counts)
    target = counts[first]
    for layer, n in sorted(counts.items()):
        if n != target:
            raise ConfigError(
                f"layer {layer} keeps {n} {what}s but layer {first} keeps {target}; every layer must keep "
                "the same number (a standard config has one width for all layers)"
            )
    if target % align:
        raise ConfigError(f"every layer keeps {target} {what}s, which is not a multiple of align={align}")
    return target


# ---------------------------------------------------------------------------- tensor edits


def _pruned(keep: torch.Tensor, total: int, device: torch.device) -> torch.Tensor:
    mask = torch.ones(total, dtype=torch.bool, device=device)
    mask[keep.to(device)] = False
    return mask


@torch.no_grad()
def _zero_rows(linear: nn.Linear, keep_rows: torch.Tensor) -> None:
    pruned = _pruned(keep_rows, linear.out_features, linear.weight.device)
    linear.weight[pruned] = 0
    if linear.bias is not None:
        linear.bias[pruned] = 0


@torch.no_grad()
def _zero_columns(linear: nn.Linear, keep_cols: torch.Tensor, refit: torch.Tensor | None) -> None:
    w = linear.weight
    w[:, _pruned(keep_cols, linear.in_features, w.device)] = 0
    if refit is not None:
        w[:, keep_cols.to(w.device)] = refit.to(device=w.device, dtype=w.dtype)


@torch.no_grad()
def _slice_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None, refit: torch.Tensor | None = None) -> None:
    """Shrink ``linear`` in place (same module object, so hooks and references survive)."""
    w = linear.weight
    new = w.detach()
    if rows is not None:
        new = new[rows.to(w.device)]
    if cols is not None:
        new = new[:, cols.to(w.device)]
    new = new.clone() if refit is None else refit.to(device=w.device, dtype=w.dtype).clone()
    linear.weight = nn.Parameter(new.contiguous(), requires_grad=w.requires_grad)
    if linear.bias is not None and rows is not None:
        b = linear.bias
        linear.bias = nn.Parameter(b.detach()[rows.to(b.device)].clone(), requires_grad=b.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape


def _configs(model: nn.Module, modules: list[nn.Module]) -> list[object]:
    """model.config and any distinct config object a layer module reads at run time."""
    found = {id(model.config): model.config}
    for m in modules:
        cfg = getattr(m, "config", None)
        if cfg is not None:
            found.setdefault(id(cfg), cfg)
    return list(found.values())


# ---------------------------------------------------------------------------- masking


def mask_mlp(model: nn.Module, layer: int, keep: Indices, down_weight: torch.Tensor | None = None) -> None:
    """Zero the pruned neurons of one layer's MLP in place (shapes unchanged).

    Pruned neurons get zero gate_proj/up_proj rows (and biases) and zero down_proj
    columns. ``down_weight`` ([hidden, len(keep)], columns in the order of ``keep``)
    replaces down_proj's kept columns: the least-squares refit of the layer output.
    """
    mlp = _dense_mlp(model, layer)
    total = mlp.gate_proj.out_features
    keep_sorted, order = _check_keep(keep, total, "neuron", layer)
    refit = None
    if down_weight is not None:
        refit = _check_refit(down_weight, (mlp.down_proj.out_features, keep_sorted.numel()), "down_weight", layer)[:, order.to(down_weight.device)]
    _zero_rows(mlp.gate_proj, keep_sorted)
    _zero_rows(mlp.up_proj, keep_sorted)
    _zero_columns(mlp.down_proj, keep_sorted, refit)


def mask_heads(model: nn.Module, layer: int, keep_kv: Indices, o_weight: torch.Tensor | None = None) -> None:
    """Zero the pruned KV groups of one layer's attention in place (shapes unchanged).

    Pruned groups get zero q_proj rows of their query heads, zero k_proj/v_proj rows of
    their KV head (biases too) and zero o_proj input columns. ``o_weight`` ([hidden,
    len(keep_kv) * heads_per_kv * head_dim], column blocks in the order of ``keep_kv``)
    replaces o_proj's kept columns.
    """
    attn = _attention(model, layer)
    shape = head_layout(model, layer)
    keep_sorted, order = _check_keep(keep_kv, shape.num_kv_heads, "KV group", layer)
    refit = None
    if o_weight is not None:
        refit = _check_refit(o_weight, (attn.o_proj.out_features, keep_sorted.numel() * shape.group_width), "o_weight", layer)
        refit = refit[:, shape.query_columns(order).to(o_weight.device)]
    q_cols = shape.query_columns(keep_sorted)
    kv_rows = shape.kv_rows(keep_sorted)
    _zero_rows(attn.q_proj, q_cols)
    _zero_rows(attn.k_proj, kv_rows)
    _zero_rows(attn.v_proj, kv_rows)
    _zero_columns(attn.o_proj, q_cols, refit)


# ---------------------------------------------------------------------------- slicing


def slice_mlp(
    model: nn.Module,
    keep: Mapping[int, Indices],
    down_weight: Mapping[int, torch.Tensor] | None = None,
    align: int = 1,
) -> None:
    """Remove the pruned MLP neurons of every layer and set ``config.intermediate_size``.

    ``keep`` needs an entry for every layer, all of the same size, a multiple of
    ``align`` (GPU kernels and tensor-parallel sharding want round widths). Layers in
    ``down_weight`` get that refit as their new down_proj (see :func:`mask_mlp`);
    other layers keep their own down_proj columns — so slicing a model that was
    already masked with refits needs no ``down_weight``. Everything is validated
    before any layer changes, so an error leaves the model untouched.
    """
    _check_align(align)
    layers = decoder_layers(model)
    down_weight = {} if down_weight is None else down_weight
    _check_layers(keep, len(layers), "keep", complete=True)
    _check_layers(down_weight, len(layers), "down_weight", complete=False)
    mlps = [_dense_mlp(model, i) for i in range(len(layers))]
    plans: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for i, mlp in enumerate(mlps):
        keep_sorted, order = _check_keep(keep[i], mlp.gate_proj.out_features, "neuron", i)
        refit = None
        if i in down_weight:
            w = _check_refit(down_weight[i], (mlp.down_proj.out_features, keep_sorted.numel()), "down_weight", i)
            refit = w[:, order.to(w.device)]
        plans[i] = (keep_sorted, refit)
    width = _check_equal_counts({i: p[0].numel() for i, p in plans.items()}, "neuron", align)

    for i, mlp in enumerate(mlps):
        keep_sorted, refit = plans[i]
        _slice_linear(mlp.gate_proj, rows=keep_sorted)
        _slice_linear(mlp.up_proj, rows=keep_sorted)
        _slice_linear(mlp.down_proj, cols=keep_sorted, refit=refit)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = width
    for cfg in _configs(model, mlps):
        cfg.intermediate_size = width


def slice_heads(
    model: nn.Module,
    keep_kv: Mapping[int, Indices],
    o_weight: Mapping[int, torch.Tensor] | None = None,
    align: int = 1,
) -> None:
    """Remove the pruned KV groups of every layer and update the attention config.

    Whole groups go (a KV head and all query heads that share it), so heads_per_kv and
    head_dim stay, and the result is a standard GQA config: ``num_key_value_heads`` =
    kept groups, ``num_attention_heads`` = kept groups × heads_per_kv and ``head_dim``
    written explicitly, because it no longer equals hidden_size // num_attention_heads
    and transformers would otherwise derive a wrong one (for the attention and RoPE) on
    load. ``align`` applies to the kept number of KV heads: set it to the intended
    tensor-parallel degree, since servers shard KV heads across GPUs (query heads are
    then a multiple too). At least one group is always kept. Qwen3's q_norm/k_norm act
    per head_dim and need no change. Validated before any change, like :func:`slice_mlp`.
    """
    _check_align(align)
    layers = decoder_layers(model)
    o_weight = {} if o_weight is None else o_weight
    _check_layers(keep_kv, len(layers), "keep_kv", complete=True)
    _check_layers(o_weight, len(layers), "o_weight", complete=False)
    attns = [_attention(model, i) for i in range(len(layers))]
    shapes = [head_layout(model, i) for i in range(len(layers))]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise CheckpointError(f"layer {i} has attention {shape} but layer 0 has {shapes[0]}; expected one layout for all layers")
    shape = shapes[0]
    plans: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for i, attn in enumerate(attns):
        keep_sorted, order = _check_keep(keep_kv[i], shape.num_kv_heads, "KV group", i)
        refit = None
        if i in o_weight:
            w = _check_refit(o_weight[i], (attn.o_proj.out_features, keep_sorted.numel() * shape.group_width), "o_weight", i)
            refit = w[:, shape.query_columns(order).to(w.device)]
        plans[i] = (keep_sorted, refit)
    kept = _check_equal_counts({i: p[0].numel() for i, p in plans.items()}, "KV group", align)

    num_heads = kept * shape.heads_per_kv
    for i, attn in enumerate(attns):
        keep_sorted, refit = plans[i]
        q_cols = shape.query_columns(keep_sorted)
        kv_rows = shape.kv_rows(keep_sorted)
        _slice_linear(attn.q_proj, rows=q_cols)
        _slice_linear(attn.k_proj, rows=kv_rows)
        _slice_linear(attn.v_proj, rows=kv_rows)
        _slice_linear(attn.o_proj, cols=q_cols, refit=refit)
        # Run-time attributes: the attention functions read num_key_value_groups (repeat_kv,
        # GQA packing); head_dim and scaling are unchanged. Older/other modules keep head counts.
        attn.num_key_value_groups = shape.heads_per_kv
        for name, value in (("num_heads", num_heads), ("num_attention_heads", num_heads), ("num_key_value_heads", kept)):
            if hasattr(attn, name):
                setattr(attn, name, value)
    for cfg in _configs(model, attns):
        cfg.head_dim = shape.head_dim
        cfg.num_attention_heads = num_heads
        cfg.num_key_value_heads = kept
