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

from pathlib import Path

from recslm.config import PipelineConfig
from recslm.store.artifact import METRICS_FILE, STAGE_FILE, ArtifactRef, ArtifactStore, artifact_key
from recslm.store.local import LocalStore, syncing_work

__all__ = [
    "METRICS_FILE", "STAGE_FILE", "ArtifactRef", "ArtifactStore", "LocalStore",
    "artifact_key", "open_store", "store_for", "syncing_work",
]  # fmt: skip


def open_store(uri: str, cache_dir: Path | None = None) -> ArtifactStore:
    """Open the store named by ``store.uri``: a local folder, or ``s3://bucket/prefix`` with its
    local cache in ``cache_dir`` (default ``~/.cache/recslm/s3``)."""
    if uri.startswith("s3://"):
        from recslm.store.s3 import S3Store  # boto3: only for an s3:// store

        return S3Store(uri, cache_dir or Path.home() / ".cache" / "recslm" / "s3")
    return LocalStore(uri)


def store_for(config: PipelineConfig) -> ArtifactStore:
    """The store ``config`` names, with a remote store's local cache in ``<run.root>/store-cache``
    (the same path on every worker that runs the same config)."""
    return open_store(config.store_uri(), Path(config.run.root) / "store-cache")
