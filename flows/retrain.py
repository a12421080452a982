"""Scheduled and UI-triggered retraining: the compress pipeline from a config file plus overrides.

The parameters are one pydantic model, so the Prefect UI renders them as a typed form
(config file, ``--set``-style overrides, run id) and rejects bad values before a run
starts; the config itself is validated (with errors naming the field and file) before any
stage runs.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from flows.compress import compress
from recslm.config import load_config
from recslm.summary import RunSummary


class RetrainParams(BaseModel):
    """What a person can change for one retraining run from the Prefect UI."""

    config_file: str = Field("configs/demo.yaml", description="Pipeline config (YAML), relative to the worker's working directory.")
    overrides: list[str] = Field(default_factory=list, description="Overrides as dotted key=value, like `recslm run --set` (e.g. students.0.arch.hidden_size=128).")
    run_id: str | None = Field(None, description="Run id (empty: a timestamped one). Re-using one re-runs it, reusing every finished stage.")


@flow(name="recslm-retrain", log_prints=True)
def retrain(params: RetrainParams = RetrainParams()) -> RunSummary:
    """Load and validate the config, then run the compress pipeline as a subflow."""
    config = load_config(params.config_file, params.overrides)
    return compress(config, run_id=params.run_id)
