"""Run the data and teacher stages in a fresh process and print their artifacts as JSON.

The stages run through their plain task functions, exactly as a Slurm job or a pod runs a
dispatched stage (no Prefect server, no MLflow): ``python -m tests.stage_worker CONFIG [--set ...]``.
"""

from __future__ import annotations

import json
import sys

from recslm.config import load_config
from tasks.data import data_task
from tasks.teacher import teacher_task
from tasks.tracking import TrackingHandle


def main(argv: list[str]) -> None:
    config = load_config(argv[0], argv[1:])
    off = TrackingHandle(enabled=False)
    data = data_task.fn(config, off)
    teacher = teacher_task.fn(config, off, data)
    print(json.dumps({"data": data.model_dump(mode="json"), "teacher": teacher.model_dump(mode="json")}))


if __name__ == "__main__":
    main(sys.argv[1:])
