"""Where a heavy stage runs: in this process, as a Slurm job, or on a Kubernetes work pool.

A heavy task (teacher, teacher_logits, distill, evaluate, profile, prune, quantize) calls
:func:`tasks.stage.run_stage` with ``remote=True``. ``run_stage`` looks the artifact up in
the store first (a cached stage never costs a job) and, on a miss with
``execution.backend`` ``slurm`` or ``kubernetes``, sends the stage's call (:class:`StageCall`:
the stage's name, the config, the input artifacts and the stage's parameters, as JSON)
to a worker instead of running the body here. The worker runs the *same* ``run_stage``
with ``remote=False`` (lookup again, body, publish, MLflow stage run) and returns the
artifact reference. So what a stage computes cannot depend on where it ran, and the
Prefect task around it keeps its retries: a lost job is a transient error.

On the worker every input artifact is materialized from the store first, so its path is
this worker's copy.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import BaseModel

from recslm.config import PipelineConfig
from recslm.errors import RecslmError
from recslm.stages import stage_named
from recslm.store import ArtifactRef, store_for
from tasks.tracking import TrackingHandle


class StageCall(BaseModel):
    """One stage invocation, as JSON: which stage, with what config, inputs and parameters."""

    stage: str
    config: PipelineConfig
    tracking: TrackingHandle
    inputs: dict[str, ArtifactRef]
    params: dict[str, str]


def should_dispatch(config: PipelineConfig, remote: bool) -> bool:
    """Whether a heavy stage (``remote``) goes to a worker: with a remote backend only."""
    return remote and config.execution.backend != "local"


def worker_identity() -> dict[str, str]:
    """Where this stage attempt runs: the Slurm job, the Kubernetes pod, or this host."""
    from recslm.slurm import current_job

    job = current_job()
    if job is not None:
        return job
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return {"backend": "kubernetes", "job_id": os.environ.get("HOSTNAME", socket.gethostname()), "flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID", "")}
    return {"backend": "local", "job_id": "", "host": socket.gethostname()}


# ----------------------------------------------------------------------------- the worker side


class CallOutcome(BaseModel):
    """What a worker sends back: the artifact, or the error with whether it may pass on retry."""

    ref: ArtifactRef | None = None
    error_type: str = ""
    error: str = ""
    transient: bool = False


def execute_call(call_json: dict[str, Any]) -> dict[str, Any]:
    """Run a dispatched stage here (in a Slurm job or a Kubernetes pod) and report its outcome.

    Errors come back as data, not as a raised exception, so the orchestrator knows
    whether the Prefect task may retry (a bad config must not burn another GPU job).
    """
    from tasks.retry import is_transient
    from tasks.stage import run_stage

    try:
        call = StageCall.model_validate(call_json)
        store = store_for(call.config)
        inputs = {role: store.materialize(ref) for role, ref in call.inputs.items()}
        ref = run_stage(stage_named(call.stage), call.config, call.tracking, inputs, remote=False, **call.params)
        return CallOutcome(ref=ref).model_dump(mode="json")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, typed, to the orchestrator
        return CallOutcome(error_type=type(exc).__name__, error=str(exc), transient=is_transient(exc)).model_dump(mode="json")


def execute_ranked_call(call_json: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of a multi-rank stage (an srun task, a torchrun worker): join the ranks' process
    group, run the stage, and report rank 0's outcome (the others return None).

    Rank 0 reports a failure as data, as :func:`execute_call` does. Any other rank raises it:
    its process then exits non-zero, and the launcher ends the remaining ranks (srun
    ``--kill-on-bad-exit``, torchrun) instead of leaving them blocked in a collective. An
    attempt whose rank 0 wrote no outcome is a lost job, which the orchestrator retries.
    """
    from recslm.distributed import barrier, env_rank, process_group

    if env_rank().main:
        with process_group():
            outcome = execute_call(call_json)
            if outcome.get("ref") is not None:
                barrier()
            return outcome
    from tasks.stage import run_stage

    with process_group():
        call = StageCall.model_validate(call_json)
        run_stage(stage_named(call.stage), call.config, call.tracking, call.inputs, remote=False, **call.params)
        barrier()
    return None


class RemoteStageError(RecslmError):
    """A stage failed on its worker; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def outcome_ref(outcome_json: dict[str, Any], where: str) -> ArtifactRef:
    """The artifact from a worker's outcome, or its error raised here with the same retry class."""
    outcome = CallOutcome.model_validate(outcome_json)
    if outcome.ref is None:
        raise RemoteStageError(f"{where}: {outcome.error_type}: {outcome.error}", transient=outcome.transient)
    return outcome.ref
