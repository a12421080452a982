"""The remote execution backends: send a stage call to a Slurm job or a Prefect work pool.

Both wait for the worker and return the artifact it published. A worker that is lost
(killed, preempted, out of memory) raises a transient error, so the Prefect task's
retries submit the stage again and it resumes from the checkpoints kept under its key;
a deterministic failure on the worker (bad data, bad config) comes back as such and is
not retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recslm.config import PipelineConfig
from recslm.errors import RecslmError, TransientError
from recslm.runtime import worker_env
from recslm.store import ArtifactRef, ArtifactStore
from tasks.dispatch import StageCall, execute_call, execute_ranked_call, outcome_ref


def run_on_worker(call: StageCall, config: PipelineConfig, store: ArtifactStore, stage: str, key: str) -> ArtifactRef:
    """Run ``call`` where ``execution.backend`` says; return the worker's artifact (with its job id)."""
    if config.execution.backend == "slurm":
        return run_on_slurm(call, config, stage, key)
    if config.execution.backend == "kubernetes":
        return run_on_work_pool(call, config, store, stage, key)
    raise RecslmError(f"execution.backend: {config.execution.backend!r} does not run stages remotely")


def run_on_slurm(call: StageCall, config: PipelineConfig, stage: str, key: str) -> ArtifactRef:
    """One Slurm job per stage attempt, with the resources of ``execution.slurm``."""
    from recslm.slurm import run_job

    slurm = config.execution.slurm
    folder = Path(slurm.folder) if slurm.folder else Path(config.run.root) / "slurm"
    ranks = config.execution.ranks(stage)
    nodes = slurm.nodes if ranks > 1 else 1
    result = run_job(
        slurm_rank if ranks > 1 else execute_call, call.model_dump(mode="json"),
        resources=slurm, folder=folder, job_name=f"recslm-{stage}-{key[:8]}", poll_s=slurm.poll_s,
        env=worker_env(config.runtime), nodes=nodes, tasks_per_node=ranks // nodes,
    )  # fmt: skip
    if result.value is None:  # rank 0 returns the outcome; None means the launch went wrong
        raise TransientError(f"stage {stage} in Slurm job {result.job_id}: rank 0 returned no outcome")
    ref = outcome_ref(result.value, f"stage {stage} in Slurm job {result.job_id}")
    worker = {**(ref.worker or {}), "backend": "slurm", "job_id": result.job_id, **({"ranks": str(ranks)} if ranks > 1 else {})}
    return ref.model_copy(update={"worker": worker})


def slurm_rank(call_json: dict[str, Any]) -> dict[str, Any] | None:
    """One srun task of a multi-rank stage's job: torch's ``env://`` variables from the Slurm job
    (submitit's helper: rank, world size, the first node as the rendezvous), then the stage."""
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # each rank picks its GPU by local rank (recslm.distributed)
    return execute_ranked_call(call_json)


def run_on_work_pool(call: StageCall, config: PipelineConfig, store: ArtifactStore, stage: str, key: str) -> ArtifactRef:
    """A flow run of the ``recslm-stage`` deployment on the configured work pool (a Kubernetes
    GPU job in production); the artifact is then read from the store it published to."""
    from prefect.deployments import run_deployment

    k8s = config.execution.kubernetes
    flow_run = run_deployment(
        name=f"recslm-stage/{k8s.deployment}",
        parameters={"call": call.model_dump(mode="json")},
        timeout=None,  # wait for the job, however long the stage trains
        as_subflow=True,
        tags=[f"stage:{stage}"],
        job_variables={"env": worker_env(config.runtime), **({"gpus": k8s.gpus} if k8s.gpus is not None else {})},
    )
    state = flow_run.state
    where = f"stage {stage} in flow run {flow_run.name} ({flow_run.id}) on work pool {k8s.work_pool}"
    if state is None or not state.is_completed():
        name = state.name if state is not None else "unknown"
        message = state.message if state is not None else ""
        lost = state is None or state.is_crashed() or state.is_cancelled() or "[transient]" in (message or "")
        raise (TransientError if lost else RecslmError)(f"{where} ended {name}: {message}")
    ref = store.lookup(stage, key)
    if ref is None:
        raise TransientError(f"{where} completed but {stage}/{key[:12]} is not in {config.store_uri()}")
    return ref.model_copy(update={"cached": False, "worker": {"backend": "kubernetes", "job_id": str(flow_run.id), "flow_run": flow_run.name}})
