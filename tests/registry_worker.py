"""One pipeline run's register stage in its own process, for the registry concurrency test.

Usage: ``python -m tests.registry_worker SPEC.json OUT.json READY_FILE GO_FILE``. SPEC holds the
config, tracking handle, run summary and release candidate. The process imports everything,
touches READY_FILE, waits for GO_FILE (so all workers hit the registry at the same moment),
registers, and writes the Registration to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from recslm.config import PipelineConfig
from recslm.summary import RunSummary
from tasks.register import register_models
from tasks.tracking import TrackingHandle


def main() -> None:
    spec_file, out_file, ready, go = (Path(a) for a in sys.argv[1:5])
    spec = json.loads(spec_file.read_text())
    config = PipelineConfig.model_validate(spec["config"])
    handle = TrackingHandle.model_validate(spec["tracking"])
    summary = RunSummary.model_validate(spec["summary"])
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    registration = register_models(config, handle, summary, spec["candidate"])
    out_file.write_text(registration.model_dump_json())


if __name__ == "__main__":
    main()
