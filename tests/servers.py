"""Real servers the production tests run against: an MLflow tracking server (SQLite backend,
artifacts proxied to an S3-compatible store) started as its own process, as a team runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

MLFLOW_ARTIFACT_BUCKET = "mlflow-artifacts"


@contextmanager
def mlflow_server(folder: Path, s3_endpoint: str) -> Iterator[str]:
    """``mlflow server`` on a free port; yields its URL. Run artifacts go to s3://mlflow-artifacts
    on ``s3_endpoint`` through the server (``--serve-artifacts``): clients need no S3 credentials."""
    import boto3

    from recslm.serve.server import free_port

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    if MLFLOW_ARTIFACT_BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=MLFLOW_ARTIFACT_BUCKET)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    log = (folder / "mlflow-server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", f"s3://{MLFLOW_ARTIFACT_BUCKET}/", "--serve-artifacts"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (folder / "mlflow-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.3)
        yield url
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not exit in ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# planted as the S3 secret key in the S3 tests, so they can prove it never reaches any output
S3_SECRET = "planted-s3cr3t-value-7f3a"
