"""The compress pipeline: the paper's checklist as one Prefect flow.

This version runs data -> teacher -> evaluate; later stages (distill, select, profile,
prune, quantize, deploy, bench) plug in after the teacher. A config that enables a stage
this version cannot run stops before any work, instead of being silently ignored.
"""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

from prefect import flow, get_run_logger

import recslm
from recslm.config import PipelineConfig
from recslm.errors import StageNotAvailableError
from recslm.store import ArtifactRef
from recslm.summary import RunSummary, StageRecord, model_record, write_summary
from tasks.data import data_task
from tasks.evaluate import evaluate_task
from tasks.options import with_retries
from tasks.teacher import teacher_task
from tasks.tracking import Tracker, TrackingHandle


def unavailable_stages(config: PipelineConfig) -> list[str]:
    """Config switches for stages this version does not run yet."""
    wanted = {
        "students (distill/select)": bool(config.students),
        "prune.enabled": config.prune.enabled,
        "quantize.enabled": config.quantize.enabled,
        "bench.enabled": config.bench.enabled,
        "execution.backend != local": config.execution.backend != "local",
        "store.uri s3://": config.store.uri.startswith("s3://"),
    }
    return [name for name, on in wanted.items() if on]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _start_tracking(config: PipelineConfig, run_id: str) -> Tracker:
    if not config.tracking.enabled:
        return Tracker(TrackingHandle(enabled=False))
    config.run.root.mkdir(parents=True, exist_ok=True)
    return Tracker.start_pipeline(
        uri=config.tracking_uri(),
        experiment=config.tracking.experiment or config.run.name,
        run_name=run_id,
        params=config.model_dump(mode="json"),
        tags={"recslm.run_id": run_id, "recslm.config_hash": config.config_hash(), "recslm.version": recslm.__version__, "host": socket.gethostname()},
    )


def _stage_record(ref: ArtifactRef) -> StageRecord:
    return StageRecord(key=ref.key, uri=ref.uri, cached=ref.cached, wall_s=round(ref.wall_s, 3), metrics=ref.metrics)


@flow(name="recslm-compress", log_prints=True)
def compress(config: PipelineConfig, run_id: str | None = None) -> RunSummary:
    """Run the pipeline for ``config``; write and return ``<run.root>/<run_id>/summary.json``."""
    missing = unavailable_stages(config)
    if missing:
        raise StageNotAvailableError(
            "this version of recslm runs data -> teacher -> evaluate; the config enables " + ", ".join(missing)
            + ": turn those off or upgrade recslm"
        )
    logger = get_run_logger()
    run_id = run_id or new_run_id()
    run_dir = Path(config.run.root) / run_id
    started = time.perf_counter()
    tracker = _start_tracking(config, run_id)
    parent = tracker.handle.parent_run_id or None
    logger.info("run %s: run folder %s, MLflow run %s", run_id, run_dir, parent)
    try:
        data = with_retries(data_task, config)(config, tracker.handle)
        teacher = with_retries(teacher_task, config)(config, tracker.handle, data)
        teacher_eval = with_retries(evaluate_task, config)(config, tracker.handle, teacher, data, "teacher")
        summary = RunSummary(
            run_id=run_id,
            config_hash=config.config_hash(),
            wall_s=round(time.perf_counter() - started, 3),
            stages={"data": _stage_record(data), "teacher": _stage_record(teacher), "evaluate": _stage_record(teacher_eval)},
            models=[model_record("teacher", "teacher", teacher_eval.metrics, teacher.key, teacher_eval.metrics["auc_mean"])],
            winner=None,
            recslm_version=recslm.__version__,
            mlflow_run_id=parent,
            run_dir=str(run_dir.resolve()),
        )
        path = write_summary(summary, run_dir)
        tracker.log_metrics(parent, {"teacher": {"auc": teacher_eval.metrics["auc"], "auc_mean": teacher_eval.metrics["auc_mean"]}, "wall_s": summary.wall_s})
        tracker.log_artifact(parent, str(path))
    except BaseException:
        tracker.end(parent, status="FAILED")
        raise
    tracker.end(parent)
    logger.info("run %s finished in %.1f s: %s", run_id, summary.wall_s, path)
    return summary
