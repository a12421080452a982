"""The ``recslm`` console script: the library's commands (``recslm.cli``) plus ``run``.

``run`` starts the pipeline flow, so it lives here in the top layer, the only place allowed
to import the flows; ``recslm.cli`` (and ``import recslm``) never pulls in Prefect or MLflow.
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from recslm.cli import ConfigArg, SetOpt, app, fail, print_summary
from recslm.config import load_config
from recslm.errors import RecslmError


def _prefect_defaults() -> None:
    """Sensible Prefect defaults for a local run; anything set in the environment wins."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@app.command()
def run(config: ConfigArg, set_: SetOpt = None, run_id: Annotated[Optional[str], typer.Option(help="Run id (default: time stamp + random suffix).")] = None) -> None:
    """Run the pipeline and write <run.root>/<run id>/summary.json."""
    try:
        cfg = load_config(config, set_ or [])
        _prefect_defaults()
        from flows.compress import compress  # Prefect and MLflow load only when a run starts

        summary = compress(cfg, run_id=run_id)
    except RecslmError as exc:
        raise fail(exc) from None
    print_summary(summary.model_dump(mode="json"))


if __name__ == "__main__":
    app()
