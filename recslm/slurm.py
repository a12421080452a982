"""Run one Python call as a Slurm job and wait for its result (the Slurm execution backend).

Submission, the batch script, pickling the call and bringing its result or exception
back are submitit's. Waiting is ours: submitit learns a job's state only from ``sacct``,
which needs Slurm's accounting daemon (slurmdbd and a database); without it a job that
died (SIGKILL, node failure, OOM, time limit) would be waited on forever. We ask the
controller instead (``scontrol show job``, which every Slurm answers), so a lost job
becomes a :class:`SlurmJobLost` within seconds, with its state and the end of its log.
A lost job is a *transient* error: the orchestrator may submit the stage again, and the
stage resumes from the checkpoints it left under its key.

Jobs are submitted with ``--requeue``, so Slurm itself requeues them after a node
failure or preemption; a requeued job is simply still running as far as we are concerned.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recslm.config import SlurmConfig
from recslm.errors import ConfigError, RecslmError, TransientError

# States after which the job will not write a result any more (``scontrol show job`` names).
ENDED_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT",
})  # fmt: skip

# Reasons a pending job waits for ever: the request exceeds what the partition or its nodes
# have (e.g. more CPUs than a node has). Slurm keeps such a job queued; recslm refuses it.
NEVER_RUNS = frozenset({"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS"})


class SlurmJobLost(TransientError):
    """The job ended without a result (killed, node failure, out of memory, time limit)."""

    def __init__(self, message: str, job_id: str, state: str):
        super().__init__(message)
        self.job_id = job_id
        self.state = state


class SlurmJobError(RecslmError):
    """Slurm refused the job, or the job's Python call could not start (deterministic)."""


@dataclass(frozen=True)
class JobResult:
    """What the job returned, and which job it was (the id goes into the stage record)."""

    value: Any
    job_id: str
    wall_s: float


def sbatch_parameters(
    resources: SlurmConfig, job_name: str, env: Mapping[str, str] | None = None, *, nodes: int = 1, tasks_per_node: int = 1
) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for one heavy stage (``execution.slurm``); ``env`` is
    exported in the job script before the setup lines (the stage's thread counts).

    A multi-rank stage is one job of ``nodes`` x ``tasks_per_node`` srun tasks (``cpus`` and
    ``mem_gb`` are per task and per node, as sbatch means them), launched with
    ``--kill-on-bad-exit``: a rank that dies ends the others rather than leaving them blocked
    in a collective until its timeout. It gets ``gpus`` per node; a one-rank stage computes on
    one device, so it asks for one GPU (when ``gpus`` is set) rather than idling the rest."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "cpus_per_task": resources.cpus,
        "mem": f"{resources.mem_gb}GB",
        "time": resources.time_min,
        "nodes": nodes,
        "ntasks_per_node": tasks_per_node,
        "additional_parameters": {"requeue": True, **resources.sbatch_args},
    }
    if nodes * tasks_per_node > 1:
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    if resources.partition:
        params["partition"] = resources.partition
    if resources.account:
        params["account"] = resources.account
    if resources.gpus:
        params["gpus_per_node"] = resources.gpus if nodes * tasks_per_node > 1 else 1
    setup = [f"export {name}={shlex.quote(value)}" for name, value in (env or {}).items()] + list(resources.setup)
    if setup:
        params["setup"] = setup
    return params


def job_record(job_id: str) -> dict[str, str] | None:
    """The job's fields from the controller (JobState, Reason, ...), or None when it no longer knows the job."""
    proc = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return None
    return dict(field.split("=", 1) for field in proc.stdout.split() if "=" in field)


def job_state(job_id: str) -> str | None:
    """The job's state from the controller, or None when it no longer knows the job."""
    record = job_record(job_id)
    return record.get("JobState") if record is not None else None


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_job(
    fn: Callable[..., Any],
    *args: Any,
    resources: SlurmConfig,
    folder: Path,
    job_name: str,
    poll_s: float = 1.0,
    on_submit: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    nodes: int = 1,
    tasks_per_node: int = 1,
) -> JobResult:
    """Submit ``fn(*args)`` as one Slurm job, wait for it, return its value and job id.

    ``folder`` (on a file system the compute nodes share) keeps the pickled call, the
    result and the job's stdout/stderr. The job runs this interpreter (``sys.executable``),
    so compute nodes need the same environment at the same path: a shared venv or the
    trainer image. Exceptions raised by ``fn`` in the job are re-raised here as
    submitit's ``FailedJobError`` carrying the job's traceback; callers that need the
    original error type should catch inside ``fn`` and return it (see ``tasks.dispatch``).

    With several tasks (``nodes`` x ``tasks_per_node``: the ranks of a multi-rank stage) every
    task runs ``fn`` and the value is task 0's; the job is then given a grace period to end
    (the other ranks leaving their process group) and cancelled if it has not.
    """
    import submitit
    from submitit.core.utils import FailedJobError

    if not _has_sbatch():
        raise ConfigError("execution.backend: slurm needs Slurm's sbatch and scontrol on PATH (and SLURM_CONF if not in /etc/slurm)")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=folder, python=shlex.quote(sys.executable), max_num_timeout=0)
    executor.update_parameters(**sbatch_parameters(resources, job_name, env, nodes=nodes, tasks_per_node=tasks_per_node))
    started = time.perf_counter()
    try:
        job = executor.submit(fn, *args)
    except FailedJobError as exc:  # sbatch refused: unknown partition, more memory or GPUs than a node has...
        raise SlurmJobError(f"sbatch refused the job {job_name} (check execution.slurm): {str(exc).strip()}") from exc
    if on_submit is not None:
        on_submit(job.job_id)
    if job.num_tasks == 1:
        value = _wait(job, poll_s)
    else:
        value = _wait(job.task(0), poll_s)
        _end_within(str(job.job_id), grace_s=60.0, poll_s=poll_s)
    return JobResult(value=value, job_id=str(job.job_id), wall_s=time.perf_counter() - started)


def _wait(job: Any, poll_s: float) -> Any:
    """Wait for the result file; give up when the controller says the job ended without one."""
    from submitit.core.utils import FailedJobError

    unknown_since: float | None = None
    while True:
        if job.paths.result_pickle.exists():
            try:
                return job.result()
            except FailedJobError as exc:
                raise SlurmJobError(f"Slurm job {job.job_id} failed:\n{exc}") from exc
        record = job_record(str(job.job_id))
        state = record.get("JobState") if record is not None else None
        if state == "PENDING" and record.get("Reason") in NEVER_RUNS:
            subprocess.run(["scancel", str(job.job_id)], capture_output=True, timeout=60)
            raise SlurmJobError(
                f"Slurm job {job.job_id} can never start ({record['Reason']}): it asks for more than the partition's nodes have "
                f"(CPUs {record.get('NumCPUs', '?')}, {record.get('TRES', '')}); lower execution.slurm.cpus / mem_gb / gpus / time_min, "
                "or choose another partition"
            )
        if state is None:  # purged from the controller (MinJobAge): one grace period for a late result file
            unknown_since = unknown_since or time.monotonic()
            if time.monotonic() - unknown_since > 30:
                _lost(job, "UNKNOWN")
        elif state.split()[0] in ENDED_STATES:
            time.sleep(min(poll_s, 1.0))  # the result file is written before the job ends; look once more
            if not job.paths.result_pickle.exists():
                _lost(job, state)
        time.sleep(poll_s)


def _end_within(job_id: str, grace_s: float, poll_s: float) -> None:
    """Let a job whose result is in end by itself; cancel it after ``grace_s`` (a rank left blocked)."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state is None or state.split()[0] in ENDED_STATES:
            return
        time.sleep(min(poll_s, 1.0))
    subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


def _lost(job: Any, state: str) -> None:
    raise SlurmJobLost(
        f"Slurm job {job.job_id} ended ({state}) without a result; end of its stderr ({job.paths.stderr}):\n{_log_tail(job.paths.stderr)}",
        job_id=str(job.job_id),
        state=state,
    )


def _has_sbatch() -> bool:
    from shutil import which

    return which("sbatch") is not None and which("scontrol") is not None


def current_job() -> dict[str, str] | None:
    """The Slurm job this process runs in (id, node), or None outside Slurm."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    return {"backend": "slurm", "job_id": job_id, "node": os.environ.get("SLURMD_NODENAME", ""), "restarts": os.environ.get("SLURM_RESTART_COUNT", "0")}
