"""MLflow tracking for pipeline runs: one parent run per pipeline run, one nested run per stage.

Runs are addressed by id through ``MlflowClient`` rather than MLflow's global "active
run", so stages running in threads or processes never log into each other's runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

MAX_PARAM_CHARS = 6000


class TrackingHandle(BaseModel):
    """What a task needs to log into the pipeline's MLflow run (small and serializable)."""

    enabled: bool
    uri: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""


def flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Flatten nested mappings into dotted keys: {"auc": {"like": .7}} -> ("auc.like", .7)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(f"{prefix}.{key}" if prefix else str(key), item)
    else:
        yield prefix, value


def numeric_items(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The flattened metrics that are numbers (bools and strings are not metrics)."""
    return {
        k: float(v) for k, v in flatten("", metrics) if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class Tracker:
    """Thin, explicit-id wrapper over MlflowClient; a disabled tracker does nothing."""

    def __init__(self, handle: TrackingHandle):
        self.handle = handle
        self.client = MlflowClient(tracking_uri=handle.uri) if handle.enabled else None

    @classmethod
    def start_pipeline(
        cls, uri: str, experiment: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str], artifact_location: str | None = None,
    ) -> Tracker:  # fmt: skip
        """The parent run of a pipeline run; a new experiment stores its artifacts at ``artifact_location`` (None: the server's default)."""
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else _create_experiment(client, experiment, artifact_location)
        if found is None or EXPERIMENT_KIND_TAG not in (found.tags or {}):
            # MLflow 3 opens an experiment without this tag in its GenAI view (traces, "no data")
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
        tracker = cls(TrackingHandle(enabled=True, uri=uri, experiment_id=experiment_id, parent_run_id=run.info.run_id))
        tracker.log_params(run.info.run_id, params)
        return tracker

    def start_stage(self, stage: str, tags: Mapping[str, str]) -> str | None:
        if self.client is None:
            return None
        run = self.client.create_run(
            self.handle.experiment_id,
            run_name=stage,
            tags={"mlflow.parentRunId": self.handle.parent_run_id, "recslm.stage": stage, **tags},
        )
        return run.info.run_id

    def log_params(self, run_id: str | None, params: Mapping[str, Any]) -> None:
        if self.client is None or run_id is None:
            return
        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in flatten("", params)]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str | None, metrics: Mapping[str, Any], step: int = 0) -> None:
        if self.client is None or run_id is None:
            return
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in numeric_items(metrics).items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[start : start + 500])

    def set_tags(self, run_id: str | None, tags: Mapping[str, str]) -> None:
        if self.client is None or run_id is None:
            return
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dataset(self, run_id: str | None, name: str, uri: str, key: str, context: str = "training") -> None:
        """The run's data artifact as an MLflow dataset input (the UI's Dataset column), its
        content key as the digest: two runs on the same records show the same digest."""
        if self.client is None or run_id is None:
            return
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # "can be interpreted in multiple ways": any local-artifact reading will do
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(uri)
        dataset = MetaDataset(source=source, name=name, digest=key[:DIGEST_CHARS])
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])

    def describe(self, run_id: str | None, markdown: str) -> None:
        """The run's description in the MLflow UI (Markdown)."""
        self.set_tags(run_id, {"mlflow.note.content": markdown})

    def log_artifact(self, run_id: str | None, path: str) -> None:
        if self.client is not None and run_id is not None:
            self.client.log_artifact(run_id, path)

    def end(self, run_id: str | None, status: str = "FINISHED") -> None:
        if self.client is not None and run_id is not None:
            self.client.set_terminated(run_id, status=status)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
DIGEST_CHARS = 32  # MLflow keeps a dataset digest in a 36-character column: the content key's first 32 hex digits


def artifact_location_for(uri: str, root: Path) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local SQLite backend, under the
    run root (not in ./mlruns of whatever folder the run started in); a tracking server
    decides for itself (None)."""
    return (Path(root) / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None


def _create_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Create the experiment, tolerating a concurrent creator."""
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # mlflow raises MlflowException on a name clash with a concurrent run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
