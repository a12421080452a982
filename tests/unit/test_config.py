"""Config: YAML in, clear errors naming field and file out; overrides; cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from recslm.config import PipelineConfig, iter_fields, load_config
from recslm.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_validate(repo_root):
    for name in ("smoke.yaml", "teacher.yaml"):  # these train a mixture-of-experts teacher
        cfg = load_config(repo_root / "configs" / name)
        assert cfg.teacher.arch is not None and cfg.teacher.arch.family == "mixtral"
    demo = load_config(repo_root / "configs" / "demo.yaml")  # starts from the one teacher.yaml built
    assert demo.teacher.path is not None and demo.teacher.arch is None


def test_unknown_key_names_field_and_file(tmp_path):
    path = write(tmp_path, "teacher:\n  train:\n    epoch: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "teacher.train.epoch" in message and "unknown key" in message


def test_wrong_type_names_field_and_value(tmp_path):
    path = write(tmp_path, "data:\n  history_len: many\n")
    with pytest.raises(ConfigError, match=r"data\.history_len: .*integer.*'many'"):
        load_config(path)


def test_later_stage_sections_validate_now(tmp_path):
    path = write(tmp_path, "prune:\n  mlp_fraction: 1.5\n")
    with pytest.raises(ConfigError, match=r"prune\.mlp_fraction"):
        load_config(path)
    path = write(tmp_path, "quantize:\n  schemes: [fp4]\n")
    with pytest.raises(ConfigError, match=r"quantize\.schemes\.0"):
        load_config(path)


def test_overrides_parse_yaml_values_and_reach_lists(tmp_path):
    path = write(tmp_path, "students:\n  - name: s1\n    arch: {hidden_size: 64}\n")
    cfg = load_config(path, ["teacher.train.epochs=2", "evaluate.prefix_sharing=false", "students.0.arch.num_layers=3"])
    assert cfg.teacher.train.epochs == 2.0
    assert cfg.evaluate.prefix_sharing is False
    assert cfg.students[0].arch.num_layers == 3


@pytest.mark.parametrize(
    "override, expected",
    [
        ("teacher.train.epochs", "expected key.path=value"),
        ("teacher.train.nope=1", r"teacher\.train\.nope: unknown key"),
        ("students.3.name=x", r"students\.3 must index the list"),
        ("data.history_len=abc", r"data\.history_len"),
    ],
)
def test_bad_overrides(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_cross_checks():
    with pytest.raises(ConfigError, match="set exactly one of arch"):
        load_config(None, ["teacher.path=/x", "teacher.arch.hidden_size=64"])
    with pytest.raises(ConfigError, match="data.tokenizer.kind: pretrained"):
        load_config(None, ["teacher.path=/x"])
    with pytest.raises(ConfigError, match="num_heads .* multiple of num_kv_heads"):
        load_config(None, ["teacher.arch.num_heads=4", "teacher.arch.num_kv_heads=3"])
    with pytest.raises(ConfigError, match="val_start_quantile"):
        load_config(None, ["data.val_start_quantile=0.95"])
    with pytest.raises(ConfigError, match="file: stores"):
        load_config(None, ["tracking.uri=file:///tmp/mlruns"])


def test_config_hash_is_stable_and_sensitive():
    a, b = load_config(None), load_config(None)
    assert a.config_hash() == b.config_hash()
    assert load_config(None, ["run.seed=1"]).config_hash() != a.config_hash()
    # writing a default is leaving it out: a field added later with a default changes no hash
    assert load_config(None, ["run.seed=0", "serve.port=30000"]).config_hash() == a.config_hash()


def test_every_field_is_documented():
    fields = list(iter_fields(PipelineConfig))
    assert len(fields) > 80
    undocumented = [name for name, _, _, description in fields if not description]
    assert undocumented == []


def test_serve_and_bench_switches_must_fit_together(tmp_path):
    student = "students:\n  - name: s1\n    arch: {hidden_size: 64}\n"
    with pytest.raises(ConfigError, match="bench.enabled: the benchmark runs against the deployed model"):
        load_config(write(tmp_path, student + "bench: {enabled: true}\n"))
    with pytest.raises(ConfigError, match="serve.model: w4a16_gptq is not produced by this run"):
        load_config(write(tmp_path, student + "serve: {enabled: true, model: w4a16_gptq}\nquantize: {enabled: true, schemes: [fp8_dynamic]}\n"))
    with pytest.raises(ConfigError, match="serve.enabled: the deployed model is the selected student"):
        load_config(write(tmp_path, "serve: {enabled: true}\n"))
    cfg = load_config(write(tmp_path, student + "serve: {enabled: true, model: fp8_dynamic}\nquantize: {enabled: true, schemes: [fp8_dynamic]}\nbench: {enabled: true}\n"))
    assert cfg.serve.model == "fp8_dynamic" and cfg.bench.enabled


def test_a_kubernetes_deploy_needs_an_s3_store(tmp_path):
    """The fleet's pods download the model from the artifact store: a local store cannot feed them."""
    student = "students:\n  - name: s1\n    arch: {hidden_size: 64}\nserve: {enabled: true, target: kubernetes}\n"
    with pytest.raises(ConfigError, match=r"serve.target: kubernetes.*store.uri must be an s3:// URI \(it is .*store\)"):
        load_config(write(tmp_path, student))
    cfg = load_config(write(tmp_path, student + "store: {uri: 's3://models/team'}\n"))
    assert cfg.serve.target == "kubernetes" and cfg.registered_model_name() == cfg.run.name


def test_a_served_teacher_needs_its_url_and_only_then(tmp_path):
    student = "students:\n  - name: s1\n    arch: {hidden_size: 64}\n"
    with pytest.raises(ConfigError, match="distill.teacher_url: set it exactly when teacher_logits is served"):
        load_config(write(tmp_path, student + "distill: {teacher_logits: served}\n"))
    with pytest.raises(ConfigError, match="distill.teacher_url: set it exactly when teacher_logits is served"):
        load_config(write(tmp_path, student + "distill: {teacher_url: 'http://teacher:30000'}\n"))
    with pytest.raises(ConfigError, match="teacher_url"):
        load_config(write(tmp_path, student + "distill: {teacher_logits: served, teacher_url: 'teacher:30000'}\n"))
    cfg = load_config(write(tmp_path, student + "distill: {teacher_logits: served, teacher_url: 'http://teacher.recslm.svc:30000'}\n"))
    assert cfg.distill.teacher_url == "http://teacher.recslm.svc:30000"
