"""What a malformed or hostile file can do to the CLI: each case is one named error (exit code 2),
never a traceback, a hang or a silently different value. Bounded in size and time."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from recslm.cli import app
from recslm.config import load_config
from recslm.errors import ConfigError
from recslm.models.factory import save_model
from recslm.yamlfile import YamlError, load_yaml
from tests.helpers import tiny_model, tiny_tokenizer

runner = CliRunner()

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def _config(tmp_path, text: str | bytes, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    assert len(BOMB) < 500
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"expands to more than 100,000 values through aliases"):
        load_config(_config(tmp_path, BOMB))
    assert time.perf_counter() - started < 2.0


def test_a_smaller_expansion_is_not_echoed_whole_in_the_error(tmp_path):
    text = "big: &big [" + ", ".join(["0123456789"] * 50) + "]\nrun:\n  name: [*big, *big, *big, *big, *big, *big, *big, *big]\n"
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, text))
    assert "run.name" in str(err.value) and len(str(err.value)) < 2_000 and "characters)" in str(err.value)


def test_a_recursive_alias_is_refused():
    with pytest.raises(YamlError, match="recursive"):
        load_yaml("a: &a [1, *a]\n")


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    text = "teacher:\n  train:\n    learning_rate: 1.0e-3\n    epochs: 1\n    learning_rate: 1.0e-2\n"
    with pytest.raises(ConfigError, match=r"line 5: duplicate key 'learning_rate' \(first at line 3\)"):
        load_config(_config(tmp_path, text))
    assert load_yaml("a: 1\nb: {a: 2}\n") == {"a": 1, "b": {"a": 2}}  # the same key in different mappings is fine
    assert load_yaml("base: &base {x: 1}\nderived:\n  <<: *base\n  y: 2\n")["derived"] == {"x": 1, "y": 2}


def test_a_config_that_is_not_utf8_names_file_and_line(tmp_path):
    path = _config(tmp_path, b"run:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"{path}: line 2: not UTF-8 text \(byte 0xe9"):
        load_config(path)


@pytest.mark.parametrize(
    "text,field",
    [
        ("run:\n  seed: true\n", "run.seed"),
        ("run:\n  seed: 1.0\n", "run.seed"),
        ("data:\n  seed: '3'\n", "data.seed"),
        ("teacher:\n  train:\n    learning_rate: .inf\n", "teacher.train.learning_rate"),
        ("teacher:\n  train:\n    learning_rate: .nan\n", "teacher.train.learning_rate"),
    ],
)
def test_lenient_values_are_refused(tmp_path, text, field):
    with pytest.raises(ConfigError, match=field):
        load_config(_config(tmp_path, text))


def test_run_root_that_is_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="run.root: .*afile exists and is not a folder"):
        load_config(_config(tmp_path, f"run:\n  root: {tmp_path / 'afile'}\n"))


def test_overrides_use_the_same_safe_loader():
    with pytest.raises(ConfigError, match="--set .*duplicate key"):
        load_config(None, ["run.name={a: 1, a: 2}"])


# ----------------------------------------------------------------------------- records files
RECORD = {"member_id": "1", "task": "like", "prefix": "Task: x\n", "candidate": "Movie: y\nAnswer:", "label": 1}


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"member_id": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"member_id": ' + "9" * 5_000 + "}", "invalid JSON"),
        (json.dumps({**RECORD, "prefix": "   \n\t"}), "prefix: is only whitespace"),
        (json.dumps({**RECORD, "candidate": " "}), "candidate: is only whitespace"),
    ],
)
def test_data_check_names_the_line_of_a_hostile_row(tmp_path, line, reason):
    path = tmp_path / "recs.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + line + "\n")
    result = runner.invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert "line 2" in result.output and reason in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["rec[v2].jsonl", "rec[/bold].jsonl", "rec[/].jsonl"])
def test_file_names_that_look_like_markup_are_printed_as_they_are(tmp_path, name):
    result = runner.invoke(app, ["data", "check", str(tmp_path / name)])
    assert result.exit_code == 2 and name in result.output and "not found" in result.output


def test_eval_refuses_prompts_beyond_the_models_context(tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    model.config.max_position_embeddings = 64
    save_model(model, tokenizer, tmp_path / "model")
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({**RECORD, "prefix": "Task: " + "history line " * 200 + "\n"}) + "\n" + json.dumps({**RECORD, "label": 0}) + "\n")
    result = runner.invoke(app, ["eval", str(tmp_path / "model"), str(path)])
    assert result.exit_code == 2, result.output
    assert "record 0 (member 1, task like)" in result.output and "beyond the model's context of 64" in result.output


# ----------------------------------------------------------------------------- bench JSON for `recslm plan`
@pytest.mark.parametrize(
    "content,reason",
    [
        ('{"results": [{"workload": {}}]}', "results.0.workload.members_per_s"),
        ('{"results": "fast"}', "results: Input should be a valid list"),
        ("[1, 2]", "expected a JSON object with a 'results' list"),
        ('{"results": []}', "'results' is empty"),
        ("[" * 100_000, "not JSON"),
        ("\xff\xfe", "not JSON"),
    ],
)
def test_plan_on_a_bench_json_of_the_wrong_shape(tmp_path, content, reason):
    path = tmp_path / "bench.json"
    path.write_bytes(content.encode("latin-1"))
    result = runner.invoke(app, ["plan", str(path), "--target", "10", "--slo-p99-ms", "100"])
    assert result.exit_code == 2, result.output
    assert reason in result.output and "Traceback" not in result.output
