"""The CLI: helpful errors without tracebacks, and the inspection commands."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def test_bad_config_is_one_clear_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  train:\n    epoch: 2\n")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "teacher.train.epoch: unknown key" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


BAD_STUDENT = """run: {name: bad-student, root: ROOT, seed: 0}
tracking: {enabled: false}
registry: {enabled: false}
students:
  - name: s1
    path: ROOT/no-such-student
"""


def test_an_error_raised_inside_the_flow_is_one_line_and_debug_shows_the_traceback(tmp_path):
    """The flow's own checks (here: a student folder that is not there, found before the data
    stage) reach the user as the one `error:` line; Prefect's traceback only with --debug."""
    config = tmp_path / "bad.yaml"
    config.write_text(BAD_STUDENT.replace("ROOT", str(tmp_path)))
    env = {**os.environ, "RECSLM_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config)], capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "error: students[0].path (s1):" in proc.stderr and "is not a directory" in proc.stderr
    assert "Traceback" not in output
    assert not list(tmp_path.glob("*/records")) and not (tmp_path / "store" / "data").exists()  # nothing ran before the check
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config), "--debug"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "Traceback" in proc.stdout + proc.stderr


def test_config_fields_and_show(repo_root):
    result = runner.invoke(app, ["config", "fields"])
    assert result.exit_code == 0 and "teacher.train.learning_rate" in result.output
    result = runner.invoke(app, ["config", "show", str(repo_root / "configs" / "smoke.yaml"), "--set", "data.history_len=7"])
    assert result.exit_code == 0 and "history_len: 7" in result.output


def test_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["data", "--help"], ["data", "build", "--help"], ["eval", "--help"], ["config", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output, args


def test_eval_command_matches_the_pipeline(smoke, tmp_path):
    """`recslm eval MODEL_DIR DATA` on the pipeline's artifacts reproduces its test AUC."""
    model_dir = smoke["first"].stages["teacher"].uri + "/model"
    data_dir = smoke["first"].stages["data"].uri
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["eval", model_dir, data_dir, "--json", str(out)])
    assert result.exit_code == 0, result.output
    import json

    metrics = json.loads(out.read_text())
    for task, auc in smoke["first"].models[0].auc.items():
        assert metrics["auc"][task] == auc


def test_eval_and_data_check_on_a_records_file(smoke, tmp_path):
    from recslm.data.build import load_split

    records = load_split(smoke["first"].stages["data"].uri, "test")[:40]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in records) + '{"member_id": 1}\n')
    result = runner.invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 2 and "line 41" in result.output
    result = runner.invoke(app, ["data", "check", str(path), "--on-bad-rows", "skip"])
    assert result.exit_code == 0 and "40 valid records, 1 bad rows" in result.output
    result = runner.invoke(app, ["eval", smoke["first"].stages["teacher"].uri + "/model", str(path), "--on-bad-rows", "skip"])
    assert result.exit_code == 0 and "mean" in result.output


def test_eval_with_a_missing_model_is_a_clear_error(tmp_path, smoke):
    result = runner.invoke(app, ["eval", str(tmp_path / "nope"), smoke["first"].stages["data"].uri])
    assert result.exit_code == 2 and "nope" in result.output and "not found" in result.output
