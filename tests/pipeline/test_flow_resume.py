"""The orchestrator itself killed mid-distillation (local backend): Prefect does not retry a
crashed flow run, so recovery is running the same config again, which skips every published
stage and resumes the interrupted one from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import trimmed_smoke

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _config_file(root: Path) -> Path:
    """The smoke pipeline up to select with one student, distilled long enough to be caught."""
    raw = trimmed_smoke(root)
    path = root / "config.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(config: Path, run_id: str) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "RECSLM_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--run-id", run_id], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.timeout(900)
def test_a_killed_pipeline_rerun_skips_finished_stages_and_resumes_distillation(prefect_harness, tmp_path):
    root = tmp_path / "runs"
    config = _config_file(root)
    first = _run(config, "killed")
    deadline = time.monotonic() + 600
    while not list((root / "store").glob("_work/distill/*/checkpoints/*/checkpoint-*/trainer_state.json")):
        assert first.poll() is None, first.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "distillation never saved a checkpoint"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # the whole orchestrator, mid-stage: nothing gets to clean up
    first.wait()
    assert not (root / "killed" / "summary.json").exists() and not list((root / "store").glob("distill/*/stage.json"))

    second = _run(config, "resumed")
    assert second.wait(timeout=600) == 0, second.stderr.read()[-3000:]
    summary = json.loads((root / "resumed" / "summary.json").read_text())
    stages = summary["stages"]
    assert all(stages[name]["cached"] for name in ("data", "teacher", "evaluate", "teacher_logits"))
    distill = stages["distill.tiny-llama"]
    assert not distill["cached"] and distill["metrics"]["phases"][0]["resumed_from"].startswith("checkpoint-")
    assert distill["metrics"]["phases"][0]["steps"] == 600
    assert summary["winner"] == "tiny-llama"
