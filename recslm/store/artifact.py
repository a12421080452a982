"""What an artifact is: its reference, its content key, its record files, and what a store offers.

Every store (``local``, ``s3``) and every stage speaks these; nothing here touches storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

import recslm
from recslm.config import stable_hash

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


class ArtifactStore(Protocol):
    """What stages need of a store; :class:`recslm.store.local.LocalStore` and :class:`recslm.store.s3.S3Store` provide it."""

    def artifact_dir(self, stage: str, key: str) -> Path: ...
    def lookup(self, stage: str, key: str) -> ArtifactRef | None: ...
    def work_dir(self, stage: str, key: str) -> Path: ...
    def new_staging_dir(self, stage: str, key: str) -> Path: ...
    def publish(self, stage: str, key: str, staging: Path, **kwargs: Any) -> ArtifactRef: ...
    def discard(self, staging: Path) -> None: ...
    def sync_work(self, stage: str, key: str) -> int: ...
    def materialize(self, ref: ArtifactRef, download: bool = True) -> ArtifactRef: ...
