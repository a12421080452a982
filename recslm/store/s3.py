"""The artifact store on S3 (or any S3-compatible server): same contract as the local store.

Layout: ``s3://<bucket>/<prefix>/<stage>/<key>/<files>``. Publishing uploads every file of
the staged folder first and ``stage.json`` last: a lookup only believes an artifact whose
``stage.json`` exists, so a reader never sees a half-uploaded artifact (an interrupted
upload leaves files no lookup trusts, and the next publish of the key overwrites them).
Files above ``multipart_threshold`` go up in parts; throttling and 5xx answers are retried
with backoff by botocore's adaptive retry mode, up to ``max_attempts``, then fail with an
error that names the bucket and endpoint.

Stages read and write local folders: a published or looked-up artifact also lives in a
local cache (``<cache>/<stage>/<key>``, filled atomically by rename), and that is the
``path`` of its reference. Endpoint, region and credentials come from the environment
(``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / profiles / instance
roles: boto3's own chain); recslm never reads, logs or stores a secret.

Checkpoints travel too: ``sync_work`` mirrors a stage's work folder (its checkpoints) to
``<prefix>/_work/<stage>/<key>/`` while it runs, and ``work_dir`` on another worker brings
them back, so a stage retried on another node (Kubernetes backoff, a resubmitted Slurm job)
resumes where the lost one stopped. A checkpoint's completion marker (``trainer_state.json``,
a finished phase's ``report.json``: written last by the writer) is uploaded after the files it
vouches for and deleted before them, so a reader never sees a marker without its files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from recslm.errors import RecslmError
from recslm.store.artifact import STAGE_FILE, ArtifactRef
from recslm.store.local import LocalStore

# Files their writers write last, after the files they vouch for (see runner._is_complete, distill phases, prune steps).
MARKERS = frozenset({"trainer_state.json", "report.json"})


class StoreError(RecslmError):
    """The artifact store could not be reached or refused a request (after retries).

    ``transient`` when the store was unreachable, throttling or failing (5xx) through all
    of botocore's retries: the orchestrator may try the stage again later. A refusal
    (no such bucket, access denied, bad credentials) fails the same way every time.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def _server_side(exc: Exception) -> bool:
    """A 5xx or throttling answer (worth retrying later), not a refusal of the request."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if hasattr(exc, "response") else 0
    code = exc.response.get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
    return status >= 500 or code in ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"store.uri: {uri!r} names no bucket; expected s3://bucket/prefix")
    return bucket, prefix.strip("/")


class S3Store:
    def __init__(self, uri: str, cache_dir: Path, *, max_attempts: int = 8, multipart_threshold: int = 64 * 2**20, client: Any = None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.cache = LocalStore(cache_dir)
        config = Config(retries={"mode": "adaptive", "max_attempts": max_attempts}, connect_timeout=10, read_timeout=120)
        self.client = client or boto3.client("s3", config=config)
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=max(5 * 2**20, multipart_threshold // 4))
        self._synced: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}  # work files in S3 as (size, mtime) when sent

    # ------------------------------------------------------------------ names
    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _where(self) -> str:
        return f"s3://{self.bucket} at {self.client.meta.endpoint_url}"

    def _call(self, what: str, fn, *args, **kwargs):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except Boto3Error as exc:  # the transfer manager's wrapper (S3UploadFailedError, retries exceeded)
            cause = exc.__cause__ or exc.__context__
            transient = not isinstance(cause, ClientError) or _server_side(cause)
            raise StoreError(f"{what} on {self._where()} failed after retries: {exc}", transient=transient) from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise StoreError(f"{what} on {self._where()} failed: {code} ({exc})", transient=_server_side(exc)) from exc
        except (BotoCoreError, OSError) as exc:  # unreachable endpoint, connection reset, timeouts
            raise StoreError(f"{what} on {self._where()} failed after retries: {exc}", transient=True) from exc

    # ------------------------------------------------------------------ the store interface
    def artifact_dir(self, stage: str, key: str) -> Path:
        return self.cache.artifact_dir(stage, key)

    def _exists(self, object_key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=object_key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"checking {object_key} on {self._where()} failed: {exc}", transient=_server_side(exc)) from exc

    def lookup(self, stage: str, key: str) -> ArtifactRef | None:
        """The published artifact, downloaded into the local cache if it is not there yet."""
        cached = self.cache.lookup(stage, key)
        if cached is None:
            if not self._call(f"looking up {stage}/{key[:12]}", self._exists, self._key(stage, key, STAGE_FILE)):
                return None
            self._download(stage, key)
            cached = self.cache.lookup(stage, key)
        return cached.model_copy(update={"uri": f"{self.uri}/{stage}/{key}", "local": str(self.artifact_dir(stage, key))})

    def _download(self, stage: str, key: str) -> None:
        staging = self.cache.new_staging_dir(stage, key)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(stage, key) + "/")
            for page in self._call(f"listing {stage}/{key[:12]}", list, pages):
                for obj in page.get("Contents", []):
                    relative = obj["Key"][len(self._key(stage, key)) + 1 :]
                    target = staging / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._call(f"downloading {obj['Key']}", self.client.download_file, self.bucket, obj["Key"], str(target), Config=self.transfer)
            final = self.artifact_dir(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError:
                if self.cache.lookup(stage, key) is None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def work_dir(self, stage: str, key: str) -> Path:
        """The local work folder, with the checkpoints another worker left in S3 brought back."""
        folder = self.cache.work_dir(stage, key)
        synced = self._synced.setdefault((stage, key), {})
        prefix = self._key("_work", stage, key) + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in self._call(f"listing the checkpoints of {stage}/{key[:12]}", list, pages):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(prefix) :]
                target = folder / relative
                if target.is_file() and target.stat().st_size == obj["Size"]:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                self._call(f"downloading checkpoint file {relative}", self.client.download_file, self.bucket, obj["Key"], str(partial), Config=self.transfer)
                os.replace(partial, target)
                stat = target.stat()
                synced[relative] = (stat.st_size, stat.st_mtime_ns)
        return folder

    def sync_work(self, stage: str, key: str) -> int:
        """Mirror the work folder to S3 (new or changed files up, removed ones deleted); return files sent.

        Works from one snapshot of the folder: files inside a checkpoint whose marker is not
        there yet wait for the next sync, and a marker goes up only after every file of its
        folder went up in this or an earlier sync.
        """
        folder = self.cache.work_dir(stage, key)
        synced = self._synced.setdefault((stage, key), {})
        snapshot = {}
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.endswith(".part"):
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed while we looked (checkpoint rotation)
                    continue
                snapshot[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
        unmarked = {PurePosixPath(r).parent for r in snapshot if PurePosixPath(r).parent.name.startswith("checkpoint-")} - {
            PurePosixPath(r).parent for r in snapshot if PurePosixPath(r).name in MARKERS
        }
        changed = [r for r, st in snapshot.items() if synced.get(r) != st and PurePosixPath(r).parent not in unmarked]
        failed: set[PurePosixPath] = set()
        sent = 0
        for relative in sorted(changed, key=lambda r: PurePosixPath(r).name in MARKERS):  # markers last
            parent = PurePosixPath(relative).parent
            if PurePosixPath(relative).name in MARKERS and parent in failed:
                continue  # its folder is not all up: the marker would vouch for missing files
            try:
                self._call(f"uploading checkpoint file {relative}", self.client.upload_file, str(folder / relative), self.bucket,
                           self._key("_work", stage, key, relative), Config=self.transfer)  # fmt: skip
            except StoreError as exc:
                if not isinstance(exc.__cause__, FileNotFoundError):
                    raise
                failed.add(parent)  # rotated away mid-sync
                continue
            synced[relative] = snapshot[relative]
            sent += 1
        stale = sorted((r for r in synced if r not in snapshot), key=lambda r: PurePosixPath(r).name not in MARKERS)  # markers first
        for relative in stale:
            self._call(f"deleting checkpoint file {relative}", self.client.delete_object, Bucket=self.bucket, Key=self._key("_work", stage, key, relative))
            del synced[relative]
        return sent

    def _drop_work(self, stage: str, key: str) -> None:
        prefix = self._key("_work", stage, key) + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        keys = [o["Key"] for page in self._call("listing checkpoints", list, pages) for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
            self._call("deleting checkpoints", self.client.delete_objects, Bucket=self.bucket, Delete=batch)
        self._synced.pop((stage, key), None)

    def new_staging_dir(self, stage: str, key: str) -> Path:
        return self.cache.new_staging_dir(stage, key)

    def publish(self, stage: str, key: str, staging: Path, **kwargs: Any) -> ArtifactRef:
        """Upload the staged folder (``stage.json`` last), then keep it as the local cache copy."""
        self.cache.write_records(stage, key, staging, **kwargs)
        files = sorted(p for p in staging.rglob("*") if p.is_file() and p != staging / STAGE_FILE)
        for path in files:
            relative = path.relative_to(staging).as_posix()
            self._call(f"uploading {relative}", self.client.upload_file, str(path), self.bucket, self._key(stage, key, relative), Config=self.transfer)
        self._call("publishing stage.json", self.client.upload_file, str(staging / STAGE_FILE), self.bucket, self._key(stage, key, STAGE_FILE))
        ref = self.cache.publish_prepared(stage, key, staging, metrics=kwargs["metrics"], wall_s=kwargs["wall_s"])
        self._drop_work(stage, key)  # published: its checkpoints are no longer needed anywhere
        return ref.model_copy(update={"uri": f"{self.uri}/{stage}/{key}", "local": str(self.artifact_dir(stage, key))})

    def discard(self, staging: Path) -> None:
        self.cache.discard(staging)

    def materialize(self, ref: ArtifactRef, download: bool = True) -> ArtifactRef:
        """The reference pointing at this worker's cached copy (downloaded now unless ``download`` is off).

        A reference made on another worker carries that worker's cache path; every worker
        calls this on the references it receives, so ``ref.path`` is always local.
        """
        here = ref.model_copy(update={"local": str(self.artifact_dir(ref.kind, ref.key))})
        if download and not (here.path / STAGE_FILE).is_file() and self.lookup(ref.kind, ref.key) is None:
            raise StoreError(f"artifact {ref.kind}/{ref.key[:12]} is not in {self.uri}")
        return here

    def object_keys(self) -> list[str]:
        """Every object under the store's prefix (for tests and inspection)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        return [o["Key"] for page in self._call("listing the store", list, pages) for o in page.get("Contents", [])]

