"""Where a heavy stage runs: in this process, as a Slurm job, or on a Kubernetes work pool.

A heavy task (teacher, distill, evaluate, profile, prune, quantize) is decorated with
:func:`dispatchable`. While it runs, the call (task name and arguments) is known to
:func:`tasks.stage.run_stage`, which looks the artifact up in the store first (a cached
stage never costs a job) and, on a miss with ``execution.backend`` ``slurm`` or
``kubernetes``, sends the *same call* to a worker instead of running the body here. The
worker executes it in full (lookup again, body, publish, MLflow stage run) and returns
the artifact reference. So what a stage computes cannot depend on where it ran, and
the Prefect task around it keeps its retries: a lost job is a transient error.

The call travels as JSON (:class:`StageCall`): every task argument is pydantic-typed,
and the worker re-validates each against the task's own type hints. On the worker every
input artifact is materialized from the store first, so its path is this worker's copy.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import socket
import typing
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, TypeAdapter

from recslm.config import PipelineConfig
from recslm.errors import RecslmError
from recslm.store import ArtifactRef, store_for

# Set on a worker while it executes a dispatched call, so run_stage runs the body there.
IN_WORKER_ENV = "RECSLM_STAGE_WORKER"

_current_call: ContextVar[StageCall | None] = ContextVar("recslm_stage_call", default=None)


class StageCall(BaseModel):
    """One task invocation, as JSON: which task (module and name) and its arguments."""

    module: str
    task: str
    arguments: dict[str, Any]

    @classmethod
    def of(cls, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> StageCall:
        raw = inspect.unwrap(fn)
        bound = inspect.signature(raw).bind(*args, **kwargs)
        hints = typing.get_type_hints(raw)
        arguments = {name: TypeAdapter(hints[name]).dump_python(value, mode="json") for name, value in bound.arguments.items()}
        return cls(module=raw.__module__, task=raw.__name__, arguments=arguments)

    def function(self) -> Callable[..., Any]:
        """The task's plain function (under Prefect's ``@task``; ``dispatchable`` unwrapped)."""
        module = importlib.import_module(self.module)
        task = getattr(module, self.task, None)
        if task is None:
            raise RecslmError(f"dispatched stage {self.module}.{self.task} does not exist on this worker (recslm versions differ?)")
        return inspect.unwrap(getattr(task, "fn", task))

    def bound_arguments(self) -> dict[str, Any]:
        raw = self.function()
        hints = typing.get_type_hints(raw)
        return {name: TypeAdapter(hints[name]).validate_python(value) for name, value in self.arguments.items()}

    @property
    def config(self) -> PipelineConfig:
        return PipelineConfig.model_validate(self.arguments["config"])


def dispatchable(fn: Callable[..., ArtifactRef]) -> Callable[..., ArtifactRef]:
    """Mark a heavy task body: its call is what a remote backend executes on a miss."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> ArtifactRef:
        token = _current_call.set(StageCall.of(fn, args, kwargs))
        try:
            return fn(*args, **kwargs)
        finally:
            _current_call.reset(token)

    return wrapper


def remote_call(config: PipelineConfig) -> StageCall | None:
    """The call to send to a worker instead of running here, or None (run here)."""
    if config.execution.backend == "local" or os.environ.get(IN_WORKER_ENV):
        return None
    return _current_call.get()


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

    os.environ[IN_WORKER_ENV] = "1"
    try:
        call = StageCall.model_validate(call_json)
        arguments = materialize_inputs(call.config, call.bound_arguments())
        ref = call.function()(**arguments)
        return CallOutcome(ref=ref).model_dump(mode="json")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, typed, to the orchestrator
        return CallOutcome(error_type=type(exc).__name__, error=str(exc), transient=is_transient(exc)).model_dump(mode="json")


def materialize_inputs(config: PipelineConfig, arguments: dict[str, Any]) -> dict[str, Any]:
    """Every ArtifactRef argument rewritten to this worker's local copy (downloaded from S3 if needed)."""
    store = store_for(config)

    def local(value: Any) -> Any:
        if isinstance(value, ArtifactRef):
            return store.materialize(value)
        if isinstance(value, dict):
            return {k: local(v) for k, v in value.items()}
        if isinstance(value, list):
            return [local(v) for v in value]
        return value

    return {name: local(value) for name, value in arguments.items()}


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
