"""A distill run killed with SIGKILL mid-phase resumes from its last checkpoint when started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _worker(work: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.distill_worker", str(work), *extra], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_distill_resumes_from_its_last_checkpoint(tmp_path):
    work = tmp_path / "killed"
    proc = _worker(work, "--step-sleep", "0.25")
    deadline = time.monotonic() + 240
    # kill in the second phase, after at least one of its checkpoints is complete
    while not list((work / "phase-1").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.5)  # the kill may land anywhere: mid-step or in the middle of the next save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "result.json").exists() and not (work / "phase-1" / "report.json").exists()

    resumed = _worker(work)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    result = json.loads((work / "result.json").read_text())
    phase0, phase1 = result["reports"]
    assert phase0["skipped"], "the finished phase must not run again"
    assert phase1["resumed_from"] and phase1["resumed_from"].startswith("checkpoint-")
    assert phase1["steps"] == 16

    clean = _worker(tmp_path / "clean")
    assert clean.wait(timeout=300) == 0, clean.stderr.read()[-2000:]
    uninterrupted = json.loads((tmp_path / "clean" / "result.json").read_text())
    assert uninterrupted["reports"][1]["resumed_from"] is None
    # resuming restores weights, optimizer, scheduler, RNG and data position: same result
    assert result["digest"] == uninterrupted["digest"]
