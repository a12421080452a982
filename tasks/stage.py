"""The one mechanism every task uses: key, skip if stored, run into staging, publish, track.

A stage (:class:`recslm.stages.Stage`) says what decides its result and how to compute it.
This module owns what is the same for every stage and knows nothing of what it computes:
the content key (the stage's key fields, the runtime of a computing stage, the input
keys), the store lookup that skips finished work, the dispatch to a worker, the numeric
runtime, the atomic publish, and the nested MLflow run with the stage's params, metrics
and lineage tags.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recslm.config import PipelineConfig
from recslm.distributed import barrier, is_main_process
from recslm.runtime import pinned_runtime
from recslm.stages import Stage
from recslm.stages.base import dump
from recslm.store import ArtifactRef, artifact_key, store_for, syncing_work
from tasks.dispatch import StageCall, should_dispatch, worker_identity
from tasks.tracking import Tracker, TrackingHandle


class StageRun:
    """A running body's context (:class:`recslm.stages.StageContext`): its folders, its key, its MLflow run."""

    def __init__(self, tracker: Tracker, run_id: str | None, key: str, out: Path, work: Path):
        self.tracker = tracker
        self.run_id = run_id
        self.key = key
        self.out = out
        self.work = work

    def log_artifact(self, path: str) -> None:
        self.tracker.log_artifact(self.run_id, path)

    def log_curve(self, step: int, values: Mapping[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, {f"train/{k}": v for k, v in values.items()}, step=step)

    def log_metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        self.tracker.log_metrics(self.run_id, dict(values), step=step)


def stage_key_params(stage: Stage, config: PipelineConfig, params: Mapping[str, Any]) -> Any:
    """What decides the stage's result besides its inputs: its key fields, plus the runtime of a
    stage that computes with torch (the thread count changes the result)."""
    key = dump(stage.key(config, **params))
    if not stage.computes:
        return key
    ranks = config.execution.ranks(stage.name)  # data-parallel ranks change the batches, so the weights
    return {**key, "runtime": config.runtime.key(), **({"ranks": ranks} if ranks > 1 else {})}


def _log_data_input(tracker: Tracker, run_id: str | None, config: PipelineConfig, used: Mapping[str, ArtifactRef]) -> None:
    """A stage that reads the data artifact lists it as its dataset input."""
    data = used.get("data")
    if data is not None:
        tracker.log_dataset(run_id, f"{config.data.source} records", data.uri, data.key)


def run_stage(
    stage: Stage, config: PipelineConfig, tracking: TrackingHandle, inputs: Mapping[str, ArtifactRef | None], *, remote: bool = False, **params: str
) -> ArtifactRef:
    """Run ``stage`` unless the store already holds its artifact; return its reference.

    ``params`` choose the instance (a student and role, a model name, a scheme); they reach
    the stage's key and body. On a miss, a heavy stage (``remote``: the tasks say which) with
    ``execution.backend`` slurm or kubernetes runs on a worker (``tasks.backends``), which
    runs this same function with ``remote=False``; this returns the worker's published
    artifact. A computing stage's body runs under
    ``config.runtime`` (thread count, deterministic kernels, global seeds from the key)
    wherever it runs.
    """
    store = store_for(config)
    used = stage.used_inputs(config, inputs, params)
    key_params = stage_key_params(stage, config, params)
    input_keys = {role: ref.key for role, ref in used.items()}
    key = artifact_key(stage.name, key_params, input_keys)
    name = stage.run_name(params)
    tracker = Tracker(tracking)
    tags = {"recslm.key": key, **{f"recslm.input.{role}": k for role, k in input_keys.items()}}
    started = time.perf_counter()

    cached = store.lookup(stage.name, key)
    if cached is not None:
        run_id = tracker.start_stage(name, {**tags, "recslm.cached": "true"})
        _log_data_input(tracker, run_id, config, used)
        tracker.log_params(run_id, key_params)
        tracker.log_metrics(run_id, cached.metrics)
        tracker.end(run_id)
        return cached.model_copy(update={"wall_s": time.perf_counter() - started, "tracking_run_id": run_id})

    if should_dispatch(config, remote):
        from tasks.backends import run_on_worker

        call = StageCall(stage=stage.name, config=config, tracking=tracking, inputs=used, params=params)
        ref = run_on_worker(call, config, store, stage.name, key)
        return store.materialize(ref, download=False).model_copy(update={"wall_s": time.perf_counter() - started})

    if not is_main_process():  # another rank of a multi-rank stage: trains beside rank 0, publishes nothing
        return _run_follower(stage, config, store, used, key, params)
    used = {role: store.materialize(ref) for role, ref in used.items()}  # a reference made on another worker: fetch its files here
    worker = worker_identity()
    run_id = tracker.start_stage(name, {**tags, "recslm.cached": "false", **{f"recslm.worker.{k}": v for k, v in worker.items() if v}})
    _log_data_input(tracker, run_id, config, used)
    tracker.log_params(run_id, key_params)
    staging = store.new_staging_dir(stage.name, key)
    context = StageRun(tracker, run_id, key, staging, store.work_dir(stage.name, key))
    barrier()  # the other ranks of a multi-rank stage wait for the inputs and checkpoints fetched above
    try:
        with syncing_work(store, stage.name, key, config.store.checkpoint_sync_s):
            with pinned_runtime(config.runtime, seed=int(key[:8], 16)) if stage.computes else contextlib.nullcontext():
                metrics = stage.body(config, context, used, **params)
        wall_s = time.perf_counter() - started
        ref = store.publish(
            stage.name, key, staging, metrics=metrics, stage_config=key_params, input_keys=input_keys, wall_s=wall_s,
            extra={"worker": worker, **({"mlflow_run_id": run_id} if run_id else {})},
        )
    except BaseException:
        store.discard(staging)
        tracker.end(run_id, status="FAILED")
        raise
    tracker.log_metrics(run_id, {**metrics, "wall_s": wall_s})
    tracker.end(run_id)
    return ref.model_copy(update={"tracking_run_id": run_id, "worker": worker})


def _run_follower(stage: Stage, config: PipelineConfig, store: Any, used: Mapping[str, ArtifactRef], key: str, params: Mapping[str, Any]) -> ArtifactRef:
    """A rank other than 0: the same body on the same inputs and checkpoint folder (the Trainer
    and DeepSpeed split the batches and keep the ranks in step), into a private folder that is
    thrown away; no tracking run, no publish. Its reference names no artifact: rank 0's is the result."""
    import tempfile

    barrier()  # after rank 0 fetched inputs and checkpoints into the shared folders
    used = {role: store.materialize(ref) for role, ref in used.items()}
    with tempfile.TemporaryDirectory(prefix=f"recslm-{stage.name}-rank-") as scratch:
        context = StageRun(Tracker(TrackingHandle(enabled=False)), None, key, Path(scratch), store.work_dir(stage.name, key))
        with pinned_runtime(config.runtime, seed=int(key[:8], 16)):
            stage.body(config, context, used, **params)
    return ArtifactRef(kind=stage.name, key=key, uri="", metrics={})
