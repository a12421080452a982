"""The content-addressed artifact store.

An artifact is a folder (``model/``, ``metrics.json``, ``stage.json`` and whatever the
stage writes) published under ``<root>/<stage>/<key>``, where the key hashes the stage
name, its config, its input keys and the recslm version. Because the key says
everything that determines the content, a stage whose key exists is skipped: a
re-run only redoes what changed, on any worker.

Publishing is atomic: a stage writes into a scratch folder and the store renames it
into place, so an artifact is either complete or absent, never half-written. Long
stages keep resumable checkpoints in ``<root>/_work/<stage>/<key>`` until they publish.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

import recslm
from recslm.config import PipelineConfig, stable_hash
from recslm.errors import CheckpointError, ConfigError

STAGE_FILE = "stage.json"
METRICS_FILE = "metrics.json"


class ArtifactRef(BaseModel):
    """What tasks pass between each other: a reference to a published artifact, never a model."""

    uri: str = Field(description="Where the artifact folder lives (a local path or s3:// URI).")
    key: str = Field(description="Content key: sha256 of stage, stage config, input keys and version.")
    kind: str = Field(description="Stage that produced it (data, teacher, evaluate, ...).")
    metrics: dict[str, Any] = Field(default_factory=dict, description="What the stage measured.")
    cached: bool = Field(False, description="True when the artifact was already in the store.")
    wall_s: float = Field(0.0, description="Seconds the stage took in this pipeline run (a lookup when cached).")
    tracking_run_id: str | None = Field(None, description="MLflow run of this stage in this pipeline run, if tracking is on.")
    local: str | None = Field(None, description="Local copy of a remote (s3://) artifact on this worker (see the stores' ``materialize``).")
    worker: dict[str, str] | None = Field(None, description="Where the stage ran when it was computed in this pipeline run (Slurm job id, pod, host).")

    @property
    def path(self) -> Path:
        """Local folder of the artifact: the folder itself, or the local copy of a remote one."""
        return Path(self.local) if self.local else Path(self.uri.removeprefix("file://"))


def artifact_key(stage: str, stage_config: Any, input_keys: dict[str, str] | None = None) -> str:
    """Key = sha256(stage name, stage config, input keys, recslm version)."""
    return stable_hash(
        {"stage": stage, "config": stage_config, "inputs": dict(sorted((input_keys or {}).items())), "version": recslm.__version__}
    )


class LocalStore:
    """A store on a local (or shared network) file system."""

    def __init__(self, root: Path | str):
        self.root = Path(str(root).removeprefix("file://")).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"store.uri: cannot create the artifact store folder {self.root}: {exc}") from exc

    def artifact_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> ArtifactRef | None:
        """The published artifact for (stage, key), or None. A folder without stage.json never counts."""
        folder = self.artifact_dir(stage, key)
        if not (folder / STAGE_FILE).is_file():
            return None
        metrics = json.loads((folder / METRICS_FILE).read_text()) if (folder / METRICS_FILE).is_file() else {}
        return ArtifactRef(uri=str(folder), key=key, kind=stage, metrics=metrics, cached=True)

    def work_dir(self, stage: str, key: str) -> Path:
        """Persistent scratch space (checkpoints) for a stage attempt; survives crashes, removed on publish."""
        folder = self.root / "_work" / stage / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def new_staging_dir(self, stage: str, key: str) -> Path:
        """A fresh, private folder to write an artifact into before publishing it."""
        folder = self.root / "_staging" / f"{stage}-{key[:16]}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def publish(
        self,
        stage: str,
        key: str,
        staging: Path,
        *,
        metrics: dict[str, Any],
        stage_config: Any,
        input_keys: dict[str, str],
        wall_s: float,
        extra: dict[str, Any] | None = None,
    ) -> ArtifactRef:
        """Write metrics.json and stage.json, then rename the folder into place (atomic on one file system).

        If another worker published the same key first, its artifact wins and ours is dropped:
        both are the same content by construction.
        """
        self.write_records(stage, key, staging, metrics=metrics, stage_config=stage_config, input_keys=input_keys, wall_s=wall_s, extra=extra)
        return self.publish_prepared(stage, key, staging, metrics=metrics, wall_s=wall_s)

    def write_records(
        self, stage: str, key: str, staging: Path, *, metrics: dict[str, Any], stage_config: Any, input_keys: dict[str, str], wall_s: float,
        extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """metrics.json and stage.json into a staged artifact (stage.json is what makes it count)."""
        _write_json(staging / METRICS_FILE, metrics)
        _write_json(
            staging / STAGE_FILE,
            {
                "stage": stage,
                "key": key,
                "config": stage_config,
                "inputs": input_keys,
                "recslm_version": recslm.__version__,
                "wall_s": round(wall_s, 3),
                "host": socket.gethostname(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {}),
            },
        )

    def publish_prepared(self, stage: str, key: str, staging: Path, *, metrics: dict[str, Any], wall_s: float) -> ArtifactRef:
        """Rename a staged artifact (records written) into place and drop its checkpoints."""
        final = self.artifact_dir(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, final)
        except OSError:
            if self.lookup(stage, key) is None:
                raise
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(self.root / "_work" / stage / key, ignore_errors=True)
        return ArtifactRef(uri=str(final), key=key, kind=stage, metrics=metrics, cached=False, wall_s=wall_s)

    def discard(self, staging: Path) -> None:
        """Drop a staging folder after a failed attempt (checkpoints in work_dir are kept)."""
        shutil.rmtree(staging, ignore_errors=True)

    def sync_work(self, stage: str, key: str) -> int:
        """Nothing to do: every worker sees this file system (see S3Store.sync_work)."""
        return 0

    def materialize(self, ref: ArtifactRef, download: bool = True) -> ArtifactRef:
        """The reference with a path valid on this worker (a shared folder needs no copy)."""
        if download and not (ref.path / STAGE_FILE).is_file():
            raise CheckpointError(f"artifact {ref.kind}/{ref.key[:12]} at {ref.path} is missing or incomplete (no {STAGE_FILE})")
        return ref


class ArtifactStore(Protocol):
    """What stages need of a store; :class:`LocalStore` and :class:`recslm.s3store.S3Store` provide it."""

    def artifact_dir(self, stage: str, key: str) -> Path: ...
    def lookup(self, stage: str, key: str) -> ArtifactRef | None: ...
    def work_dir(self, stage: str, key: str) -> Path: ...
    def new_staging_dir(self, stage: str, key: str) -> Path: ...
    def publish(self, stage: str, key: str, staging: Path, **kwargs: Any) -> ArtifactRef: ...
    def discard(self, staging: Path) -> None: ...
    def sync_work(self, stage: str, key: str) -> int: ...
    def materialize(self, ref: ArtifactRef, download: bool = True) -> ArtifactRef: ...


@contextmanager
def syncing_work(store: ArtifactStore, stage: str, key: str, every_s: float) -> Iterator[None]:
    """While a stage runs, mirror its checkpoints to the store every ``every_s`` seconds, and
    once more if it fails, so a retry on another worker resumes from them. A failed sync is
    logged, never fatal: training goes on and the next sync tries again."""
    stop = threading.Event()

    def sync() -> None:
        try:
            store.sync_work(stage, key)
        except Exception as exc:  # noqa: BLE001 - the stage matters more than one mirror round
            logging.getLogger(__name__).warning("checkpoint sync of %s/%s failed (will retry): %s", stage, key[:12], exc)

    def loop() -> None:
        while not stop.wait(every_s):
            sync()

    thread = threading.Thread(target=loop, name=f"recslm-sync-{stage}", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        stop.set()
        thread.join()
        sync()  # what the failed attempt reached, for the retry
        raise
    finally:
        stop.set()
        thread.join()


def open_store(uri: str, cache_dir: Path | None = None) -> ArtifactStore:
    """Open the store named by ``store.uri``: a local folder, or ``s3://bucket/prefix`` with its
    local cache in ``cache_dir`` (default ``~/.cache/recslm/s3``)."""
    if uri.startswith("s3://"):
        from recslm.s3store import S3Store

        return S3Store(uri, cache_dir or Path.home() / ".cache" / "recslm" / "s3")
    return LocalStore(uri)


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def store_for(config: PipelineConfig) -> ArtifactStore:
    """The store ``config`` names, with a remote store's local cache in ``<run.root>/store-cache``
    (the same path on every worker that runs the same config)."""
    return open_store(config.store_uri(), Path(config.run.root) / "store-cache")
