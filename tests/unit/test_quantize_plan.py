"""The before-any-training check that the final student will be quantizable with the group size."""

from __future__ import annotations

import json

import pytest

from recslm.config import StudentSpec, load_config
from recslm.errors import ConfigError
from recslm.quantize.plan import check_quantizable, final_widths


def demo(repo_root, *overrides):
    return load_config(repo_root / "configs" / "demo.yaml", list(overrides))


def test_demo_and_smoke_configs_are_quantizable(repo_root):
    for cfg in (demo(repo_root), load_config(repo_root / "configs" / "smoke.yaml", [])):
        checked = check_quantizable(cfg)
        assert set(checked) == {s.name for s in cfg.students} and all(checked.values())
        widths = [w for outcomes in checked.values() for layers in outcomes for w in layers.values()]
        assert widths and all(w % cfg.quantize.group_size == 0 for w in widths)
    # llama-64x2 after the demo's pruning: hidden 64, o_proj 2 x 16 = 32, MLP 128 -> 80
    assert check_quantizable(demo(repo_root))["llama-64x2"] == [{"q/k/v/gate/up_proj": 64, "o_proj": 32, "down_proj": 80}]


def test_default_group_size_on_the_demo_names_student_layer_and_width(repo_root):
    with pytest.raises(ConfigError) as err:
        check_quantizable(demo(repo_root, "quantize.group_size=128"))
    message = str(err.value)
    # llama-64x2 after MLP 37.5 % and half the KV groups: hidden 64, o_proj 2 x 16 = 32, MLP 80
    assert "quantize.group_size: 128" in message
    assert "llama-64x2 q/k/v/gate/up_proj (64)" in message and "llama-64x2 o_proj (32)" in message and "llama-64x2 down_proj (80)" in message
    assert "qwen3-96x3 down_proj (120)" in message and "qwen3-96x3 o_proj (48)" in message


def test_fp8_only_or_quantize_off_needs_no_group_check(repo_root):
    assert check_quantizable(demo(repo_root, "quantize.group_size=128", "quantize.schemes=[fp8_dynamic, w8a8_int]")) == {}
    assert check_quantizable(demo(repo_root, "quantize.group_size=128", "quantize.enabled=false")) == {}


def test_parts_auto_checks_every_outcome_of_the_profile(repo_root):
    cfg = demo(repo_root, "prune.parts=auto")
    shape = {"hidden": 64, "intermediate": 128, "heads": 4, "kv": 2, "head_dim": 16, "experts": 0}
    outcomes = final_widths(shape, cfg.prune)
    assert {(w["down_proj"], w["o_proj"]) for w in outcomes} == {(80, 32), (80, 64), (128, 32), (128, 64)}
    assert final_widths(shape, cfg.prune.model_copy(update={"parts": "config"})) == [{"q/k/v/gate/up_proj": 64, "o_proj": 32, "down_proj": 80}]


def test_student_from_a_folder_is_read_from_its_config_json(repo_root, tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 96, "intermediate_size": 256, "num_attention_heads": 6, "num_key_value_heads": 2}))
    cfg = demo(repo_root, "quantize.group_size=16")
    cfg.students = [StudentSpec(name="hf", path=folder)]
    # hidden 96; MLP 256 -> 160; half of 2 KV groups of 3 heads x 16 -> o_proj 48
    assert check_quantizable(cfg) == {"hf": [{"q/k/v/gate/up_proj": 96, "o_proj": 48, "down_proj": 160}]}
    cfg.quantize.group_size = 32
    with pytest.raises(ConfigError, match=r"these would not: hf o_proj \(48\)\. "):
        check_quantizable(cfg)
    (folder / "config.json").write_text("{")
    with pytest.raises(ConfigError, match="students.hf.path"):
        check_quantizable(cfg)


QWEN3_0_6B = {  # the released Qwen3-0.6B config.json's shape fields
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 28, "vocab_size": 151936,
}  # fmt: skip


def test_the_gpu_recipe_validates_and_its_students_quantize_and_shard_after_pruning(repo_root, tmp_path):
    """configs/gpu-qwen3.yaml: bf16 on CUDA, ZeRO-3, 128-aligned pruning, W4A16 groups of 128,
    FP8 on a Kubernetes fleet; both students (the checkpoint's shape read from its config.json)
    stay quantizable and shardable over 1, 2 and 4 GPUs after the planned pruning."""
    import json

    from recslm.config import load_config
    from recslm.quantize.plan import check_quantizable, check_shardable

    (tmp_path / "qwen3-0.6b").mkdir()
    (tmp_path / "qwen3-0.6b" / "config.json").write_text(json.dumps(QWEN3_0_6B))
    cfg = load_config(repo_root / "configs" / "gpu-qwen3.yaml", [f"students.0.path={tmp_path / 'qwen3-0.6b'}"])
    assert (cfg.runtime.device, cfg.runtime.dtype, cfg.runtime.gradient_checkpointing) == ("cuda", "bf16", True)
    assert cfg.distill.deepspeed.enabled and cfg.distill.deepspeed.zero_stage == 3 and cfg.prune.align == 128
    assert cfg.serve.target == "kubernetes" and cfg.serve.quantization == "fp8" and cfg.store.uri.startswith("s3://")
    widths = check_quantizable(cfg)
    assert set(widths) == {"qwen3-0.6b", "qwen3-0.6b-scratch"}
    assert all(w["down_proj"] % 128 == 0 and w["down_proj"] < 3072 for outcomes in widths.values() for w in outcomes)
    for tp in (2, 4):
        shards = check_shardable(cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"tensor_parallel": tp})}))
        assert all(o["mlp"] % tp == 0 and o["heads"] % tp == 0 for outcomes in shards.values() for o in outcomes)


def test_a_tensor_parallel_degree_the_pruned_widths_cannot_split_is_refused_naming_student_and_width():
    from recslm.config import PipelineConfig
    from recslm.errors import ConfigError
    from recslm.quantize.plan import check_shardable

    cfg = PipelineConfig.model_validate({
        "students": [{"name": "s", "arch": {"family": "llama", "hidden_size": 96, "num_layers": 2, "num_heads": 6, "num_kv_heads": 3, "intermediate_size": 200}}],
        "prune": {"enabled": True, "mlp_fraction": 0.25, "heads_fraction": 0.0, "steps": 1},
        "serve": {"enabled": True, "tensor_parallel": 4},
    })  # fmt: skip
    with pytest.raises(ConfigError, match=r"serve.tensor_parallel: 4 ranks.*s MLP width 150 \(mlp.down_proj input\), s attention heads 6, s KV heads 3"):
        check_shardable(cfg)
    assert check_shardable(cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"tensor_parallel": 3})})) == {"s": [{"mlp": 150, "heads": 6, "kv_heads": 3}]}
