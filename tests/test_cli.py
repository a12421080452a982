"""The CLI: helpful errors without tracebacks, and the inspection commands."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from recslm.cli import app

runner = CliRunner()


def test_bad_config_is_one_clear_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  train:\n    epoch: 2\n")
    proc = subprocess.run([sys.executable, "-m", "recslm.cli", "run", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "teacher.train.epoch: unknown key" in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_config_fields_and_show(repo_root):
    result = runner.invoke(app, ["config", "fields"])
    assert result.exit_code == 0 and "teacher.train.learning_rate" in result.output
    result = runner.invoke(app, ["config", "show", str(repo_root / "configs" / "smoke.yaml"), "--set", "data.history_len=7"])
    assert result.exit_code == 0 and "history_len: 7" in result.output


def test_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["data", "--help"], ["data", "build", "--help"], ["eval", "--help"], ["config", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output, args
