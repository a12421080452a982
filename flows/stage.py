"""One heavy stage as its own flow run: what the Kubernetes backend runs on the GPU work pool.

``execution.backend: kubernetes`` sends a stage's call (``tasks.dispatch.StageCall``) to the
``recslm-stage`` deployment; the work pool starts a Job (``infra/prefect/k8s-gpu-job-template.json``)
that runs this flow, which executes the stage and publishes its artifact to the shared store.
A deterministic failure fails the flow run with the error; one that may pass on retry is
marked ``[transient]`` so the orchestrating task retries it (Kubernetes' own backoffLimit
already replaces a pod killed mid-stage, and the stage resumes from its checkpoint).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from recslm.errors import TransientError
from tasks.dispatch import CallOutcome, RemoteStageError, StageCall, execute_call
from tasks.torchrun import run_ranks


@flow(name="recslm-stage", log_prints=True)
def stage(call: dict[str, Any]) -> dict[str, Any]:
    """Run one dispatched stage here and return its artifact reference (as JSON). A multi-rank
    stage (``execution.kubernetes.ranks``, one per GPU by default) runs on torchrun ranks in this pod."""
    parsed = StageCall.model_validate(call)
    ranks = parsed.config.execution.ranks(parsed.stage)
    try:
        raw = run_ranks(call, ranks) if ranks > 1 else execute_call(call)
    except TransientError as exc:  # a lost rank
        raise RemoteStageError(f"[transient] {exc}", transient=True) from exc
    outcome = CallOutcome.model_validate(raw)
    if outcome.ref is None:
        marker = "[transient] " if outcome.transient else ""
        raise RemoteStageError(f"{marker}{outcome.error_type}: {outcome.error}", transient=outcome.transient)
    return outcome.model_dump(mode="json")
