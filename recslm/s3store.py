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
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from recslm.errors import RecslmError
from recslm.store import METRICS_FILE, STAGE_FILE, ArtifactRef, LocalStore


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
        return self.cache.work_dir(stage, key)

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

