"""The quantize stage with llm-compressor: saved checkpoints, grids, activation quantization, QuantEase."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from recslm.config import CalibrationConfig, QuantizeConfig
from recslm.data.build import load_split, tokenizer_path
from recslm.data.tokenizer import load_tokenizer
from recslm.errors import ConfigError
from recslm.evaluate.scoring import score_records
from recslm.models.factory import count_parameters, load_model, save_model
from recslm.quantize.apply import quantize_model
from recslm.quantize.grid import symmetric_grid
from tests.helpers import data_artifact, tiny_model

SCHEMES = ["fp8_dynamic", "w8a8_int", "w4a16_gptq", "w4a16_quantease"]
FORMATS = {"fp8_dynamic": "float-quantized", "w8a8_int": "int-quantized", "w4a16_gptq": "pack-quantized", "w4a16_quantease": "pack-quantized"}
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def settings(**overrides) -> QuantizeConfig:
    return QuantizeConfig(**{"enabled": True, "schemes": SCHEMES, "group_size": 16, "calibration": CalibrationConfig(count=24), **overrides})


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A data artifact and a tiny llama student (hidden 32, MLP 64, 4 heads / 2 KV heads of 8)."""
    root = tmp_path_factory.mktemp("quantize")
    data = data_artifact(root)
    tokenizer = load_tokenizer(tokenizer_path(data))
    save_model(tiny_model(tokenizer, "llama", seed=3), tokenizer, root / "student")
    return {"root": root, "data": data, "model": root / "student", "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def quantized(student):
    """Every scheme, once, on the student."""
    out = {}
    for scheme in SCHEMES:
        folder = student["root"] / scheme
        out[scheme] = (folder / "model", quantize_model(student["model"], student["data"], folder, scheme, settings(), seed=0))
    return out


def _scores(model, student):
    records = load_split(student["data"], "test")
    return torch.tensor(score_records(model, student["tokenizer"], records).scores)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_saved_config_is_compressed_tensors_as_serving_engines_load_it(quantized, scheme):
    folder, metrics = quantized[scheme]
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == FORMATS[scheme]
    assert config["ignore"] == ["lm_head"]
    group = config["config_groups"]["group_0"]
    weights, activations = group["weights"], group["input_activations"]
    if scheme.startswith("w4a16"):
        assert (weights["num_bits"], weights["type"], weights["strategy"], weights["group_size"]) == (4, "int", "group", 16)
        assert activations is None
    else:
        assert weights["num_bits"] == 8 and weights["strategy"] == "channel"
        assert weights["type"] == ("float" if scheme == "fp8_dynamic" else "int")
        assert activations["dynamic"] is True and activations["strategy"] == "token" and activations["num_bits"] == 8
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        if scheme.startswith("w4a16"):
            assert "model.layers.0.mlp.down_proj.weight_packed" in keys and f.get_tensor("model.layers.0.mlp.down_proj.weight_packed").dtype == torch.int32
        else:
            dtype = f.get_tensor("model.layers.0.mlp.down_proj.weight").dtype
            assert dtype == (torch.float8_e4m3fn if scheme == "fp8_dynamic" else torch.int8)
        assert f.get_tensor("lm_head.weight").dtype == torch.float32
    assert metrics["bytes"] < metrics["bytes_before"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_checkpoint_loads_back_on_its_grid_and_scores(quantized, student, scheme):
    folder, metrics = quantized[scheme]
    original = load_model(student["model"])
    model = load_model(folder)
    assert count_parameters(model) == count_parameters(original) == metrics["params"]
    for layer in model.model.layers:
        for name, module in layer.named_modules():
            if not name.endswith(LINEAR):
                continue
            weight, scale = module.weight.detach(), module.weight_scale.detach()
            if scheme.startswith("w4a16"):
                ints = weight / scale.repeat_interleave(16, dim=1)
                assert torch.allclose(ints, ints.round(), atol=1e-3) and ints.round().abs().max() <= 8
            elif scheme == "w8a8_int":
                ints = weight / scale
                assert torch.allclose(ints, ints.round(), atol=1e-3) and ints.round().abs().max() <= 128
            else:
                ratio = weight / scale
                assert torch.allclose(ratio.to(torch.float8_e4m3fn).float(), ratio, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.lm_head.weight, original.lm_head.weight)  # ignored: unquantized
    scores, reference = _scores(model, student), _scores(original, student)
    assert torch.isfinite(scores).all()
    difference = (scores - reference).abs()
    assert 0 < difference.max() < 0.05


@pytest.mark.parametrize("scheme,levels", [("w8a8_int", 127.5), ("fp8_dynamic", 448)])
def test_activations_are_quantized_per_token_after_reload(quantized, scheme, levels):
    """8-bit schemes quantize each token's input vector on the fly (dynamic, per token)."""
    model = load_model(quantized[scheme][0])
    layer = model.model.layers[0].mlp.down_proj
    x = torch.randn(2, 5, layer.in_features) * torch.linspace(0.1, 3, layer.in_features)
    with torch.no_grad():
        y = layer(x)
    scale = x.abs().amax(dim=-1, keepdim=True) / levels
    if scheme == "w8a8_int":
        xq = torch.clamp(torch.round(x / scale), -128, 127) * scale
    else:
        xq = (x / scale).to(torch.float8_e4m3fn).float() * scale
    expected = xq @ layer.weight.detach().T
    assert torch.allclose(y, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(y, x @ layer.weight.detach().T, atol=1e-4, rtol=1e-4)


def test_quantease_lowers_gptq_layer_error_on_the_same_inputs(quantized):
    layers = quantized["w4a16_quantease"][1]["layers"]
    assert [r["name"].rsplit(".", 1)[-1] for r in layers[:7]] == list(LINEAR) and len(layers) == 14
    for r in layers:
        assert r["quantease"] <= r["gptq"] * (1 + 1e-6) and r["sweeps"] >= 1
    assert sum(r["quantease"] < r["gptq"] for r in layers) >= 0.9 * len(layers)
    assert sum(r["gptq"] < r["rtn"] for r in layers) >= 0.9 * len(layers)
    summary = quantized["w4a16_quantease"][1]["layer_errors"]
    assert summary["quantease_below_gptq"] == sum(r["quantease"] < r["gptq"] for r in layers)
    gptq_only = quantized["w4a16_gptq"][1]["layers"]
    assert all(math.isnan(r["quantease"]) and r["sweeps"] == 0 for r in gptq_only)
    # same calibration, same grid, same GPTQ start: the GPTQ errors agree between the two runs
    # for the first layer (later layers see inputs from differently quantized earlier layers)
    assert gptq_only[0]["gptq"] == pytest.approx(layers[0]["gptq"], rel=1e-5)


def test_quantease_from_rounding_never_ends_above_rounding(student, tmp_path):
    metrics = quantize_model(student["model"], student["data"], tmp_path, "w4a16_quantease", settings(quantease_init="rtn", quantease_sweeps=5), seed=0)
    assert metrics["layers"]
    for r in metrics["layers"]:
        assert r["quantease"] <= r["rtn"] * (1 + 1e-6)


def test_group_size_that_does_not_divide_names_the_layers_before_any_work(student, tmp_path):
    with pytest.raises(ConfigError) as err:
        quantize_model(student["model"], student["data"], tmp_path / "out", "w4a16_gptq", settings(group_size=24), seed=0)
    message = str(err.value)
    assert "quantize.group_size: 24" in message
    assert "model.layers.0.self_attn.q_proj (in_features 32)" in message and "model.layers.1.mlp.down_proj (in_features 64)" in message
    assert "lm_head" not in message  # ignored layers are not quantized, so not checked
    assert not (tmp_path / "out").exists()


def test_recslm_grid_rounds_exactly_like_compressed_tensors():
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    weight = torch.randn(24, 64) * torch.linspace(0.01, 2, 64)
    grid = symmetric_grid(weight, bits=4, group_size=16)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=16)
    expected = fake_quantize(weight, grid.scale, grid.zero_point.to(torch.int8), args)
    assert torch.equal(grid.project(weight), expected)


@pytest.mark.parametrize("family", ["qwen3", "mixtral"])
def test_other_families_quantize_and_load(student, tmp_path, family):
    """Qwen3 (q/k norms) and a Mixtral-style MoE go through the same sequential GPTQ path."""
    save_model(tiny_model(student["tokenizer"], family, seed=1), student["tokenizer"], tmp_path / "in")
    metrics = quantize_model(tmp_path / "in", student["data"], tmp_path / "out", "w4a16_quantease", settings(), seed=0)
    assert metrics["layers"] and all(r["quantease"] <= r["gptq"] * (1 + 1e-6) for r in metrics["layers"])
    scores = _scores(load_model(tmp_path / "out" / "model"), student)
    assert torch.isfinite(scores).all()
