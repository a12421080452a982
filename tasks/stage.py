"""The one mechanism every task uses: key, skip if stored, run into staging, publish, track.

A stage body is a library call ``body(staging_dir, work_dir, run) -> metrics``. This
module owns what is the same for every stage: the content key, the store lookup that
skips finished work, the atomic publish, and the nested MLflow run with the stage's
params, metrics and lineage tags.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from recslm.config import PipelineConfig, RuntimeConfig
from recslm.runtime import pinned_runtime
from recslm.store import ArtifactRef, artifact_key, store_for, syncing_work
from tasks.dispatch import remote_call, worker_identity
from tasks.tracking import Tracker, TrackingHandle


class StageRun:
    """What a running stage body may use: its MLflow run (for live curves) and its key."""

    def __init__(self, tracker: Tracker, run_id: str | None, key: str):
        self.tracker = tracker
        self.run_id = run_id
        self.key = key

    def log_artifact(self, path: str) -> None:
        """Attach a file (a figure, a report) to this stage's MLflow run."""
        self.tracker.log_artifact(self.run_id, path)

    def log_curve(self, step: int, values: Mapping[str, float]) -> None:
        """Log training curves live (loss, learning rate) under ``train/``."""
        self.tracker.log_metrics(self.run_id, {f"train/{k}": v for k, v in values.items()}, step=step)


Body = Callable[[Path, Path, StageRun], dict[str, Any]]


def stage_params(section: Any) -> Any:
    """JSON form of a config section (a pydantic model or plain data)."""
    return section.model_dump(mode="json") if isinstance(section, BaseModel) else section


def run_stage(
    stage: str,
    config: PipelineConfig,
    tracking: TrackingHandle,
    stage_config: Any,
    inputs: Mapping[str, ArtifactRef],
    body: Body,
    *,
    name: str | None = None,
    runtime: RuntimeConfig | None = None,
) -> ArtifactRef:
    """Run ``body`` unless the store already holds this stage's artifact; return its reference.

    ``name`` distinguishes several runs of one stage (e.g. evaluate of teacher and students)
    in MLflow; the key alone decides what is cached. On a miss, a heavy stage (a
    ``dispatchable`` task) with ``execution.backend`` slurm or kubernetes runs on a worker
    (``tasks.backends``) and this returns the worker's published artifact.

    ``runtime`` (``config.runtime`` for every stage that computes with torch): the body runs
    under it (thread count, deterministic kernels, global seeds from the key) wherever it
    runs, and it is part of the key, since the thread count changes the result.
    """
    store = store_for(config)
    params = stage_params(stage_config)
    if runtime is not None:
        params = {**params, "runtime": runtime.model_dump(mode="json")}
    input_keys = {role: ref.key for role, ref in inputs.items()}
    key = artifact_key(stage, params, input_keys)
    tracker = Tracker(tracking)
    tags = {"recslm.key": key, **{f"recslm.input.{role}": k for role, k in input_keys.items()}}
    started = time.perf_counter()

    cached = store.lookup(stage, key)
    if cached is not None:
        run_id = tracker.start_stage(name or stage, {**tags, "recslm.cached": "true"})
        tracker.log_params(run_id, params)
        tracker.log_metrics(run_id, cached.metrics)
        tracker.end(run_id)
        return cached.model_copy(update={"wall_s": time.perf_counter() - started, "tracking_run_id": run_id})

    call = remote_call(config)
    if call is not None:
        from tasks.backends import run_on_worker

        ref = run_on_worker(call, config, store, stage, key)
        return store.materialize(ref, download=False).model_copy(update={"wall_s": time.perf_counter() - started})

    for ref in inputs.values():
        store.materialize(ref)  # a reference made on another worker: fetch its files here first
    worker = worker_identity()
    run_id = tracker.start_stage(name or stage, {**tags, "recslm.cached": "false", **{f"recslm.worker.{k}": v for k, v in worker.items() if v}})
    tracker.log_params(run_id, params)
    staging = store.new_staging_dir(stage, key)
    try:
        with syncing_work(store, stage, key, config.store.checkpoint_sync_s):
            with pinned_runtime(runtime, seed=int(key[:8], 16)) if runtime is not None else contextlib.nullcontext():
                metrics = body(staging, store.work_dir(stage, key), StageRun(tracker, run_id, key))
        wall_s = time.perf_counter() - started
        ref = store.publish(
            stage, key, staging, metrics=metrics, stage_config=params, input_keys=input_keys, wall_s=wall_s,
            extra={"worker": worker, **({"mlflow_run_id": run_id} if run_id else {})},
        )
    except BaseException:
        store.discard(staging)
        tracker.end(run_id, status="FAILED")
        raise
    tracker.log_metrics(run_id, {**metrics, "wall_s": wall_s})
    tracker.end(run_id)
    return ref.model_copy(update={"tracking_run_id": run_id, "worker": worker})
