"""torchrun inside one worker: the ranks of a multi-rank stage in a Kubernetes pod.

On Kubernetes a stage is one pod (a Job of the GPU work pool) holding all its GPUs; the
``recslm-stage`` flow run in that pod starts ``torchrun --standalone`` with one rank per GPU,
each running the stage (:func:`tasks.dispatch.execute_ranked_call`), and reads back rank
0's outcome. torchrun ends every rank when one fails, so a lost rank ends the attempt
without an outcome, which is a transient error: the orchestrator's retry resumes from the
stage's checkpoints.

Usage of the rank side (what torchrun runs): ``python -m tasks.torchrun TARGET PAYLOAD OUT``,
TARGET a ``module:function`` called with the JSON in PAYLOAD on every rank; rank 0 writes
the value it returns to OUT.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from recslm.errors import TransientError

RANK_PROGRAM = "tasks.dispatch:execute_ranked_call"


def run_ranks(payload: Any, nproc: int, target: str = RANK_PROGRAM, *, timeout_s: float | None = None) -> Any:
    """Run ``target(payload)`` on ``nproc`` torchrun ranks in this machine; return rank 0's value."""
    with tempfile.TemporaryDirectory(prefix="recslm-ranks-") as tmp:
        given, out = Path(tmp) / "payload.json", Path(tmp) / "rank0.json"
        given.write_text(json.dumps(payload))
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
            "-m", "tasks.torchrun", target, str(given), str(out),
        ]  # fmt: skip
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(command, env=env, timeout=timeout_s, check=False)
        if not out.is_file():
            raise TransientError(f"{target} on {nproc} torchrun ranks ended (exit {proc.returncode}) without rank 0's result: a rank was lost")
        return json.loads(out.read_text())


def _rank_main(target: str, payload_file: str, out_file: str) -> None:
    module, _, name = target.partition(":")
    value = getattr(importlib.import_module(module), name)(json.loads(Path(payload_file).read_text()))
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(out_file).with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(out_file)  # whole or absent: the launcher reads it only after every rank ended


if __name__ == "__main__":
    _rank_main(*sys.argv[1:4])
