"""The store on a local (or shared network) file system, and the checkpoint mirror loop."""

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
from typing import Any

import recslm
from recslm.errors import CheckpointError, ConfigError
from recslm.jsonfile import write_json
from recslm.store.artifact import METRICS_FILE, STAGE_FILE, ArtifactRef, ArtifactStore
from recslm.store.integrity import MANIFEST_FIELD, build_manifest, verify_on_use


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
        """The published artifact for (stage, key), or None. A folder without stage.json never counts;
        one whose files differ from its manifest is a :class:`CorruptArtifactError`
        (see :mod:`recslm.store.integrity`)."""
        folder = self.artifact_dir(stage, key)
        if not (folder / STAGE_FILE).is_file():
            return None
        verify_on_use(self.root, stage, key, folder)
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
        """metrics.json and stage.json into a staged artifact (stage.json is what makes it count,
        and records every other file's size and sha256)."""
        write_json(staging / METRICS_FILE, metrics, sort_keys=True)
        manifest = build_manifest(staging)
        write_json(
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
                MANIFEST_FIELD: manifest,
            },
            sort_keys=True,
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
