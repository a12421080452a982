"""The S3 artifact store against a real S3-compatible server on localhost (moto in server mode)."""

from __future__ import annotations

import os
import shutil

import pytest

from recslm.store import STAGE_FILE
from recslm.store.s3 import S3Store, StoreError
from tests.servers import S3_SECRET as SECRET

def stage_folder(store, files: dict[str, bytes]):
    staging = store.new_staging_dir("teacher", "k" * 64)
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    return staging


def publish(store, staging, key="k" * 64):
    return store.publish("teacher", key, staging, metrics={"auc": 0.7}, stage_config={"lr": 1}, input_keys={"data": "d" * 64}, wall_s=1.0)


def test_published_artifact_is_found_and_downloaded_by_another_worker(s3_endpoint, tmp_path):
    writer = S3Store("s3://artifacts/team/run", tmp_path / "cache-a")
    assert writer.lookup("teacher", "k" * 64) is None
    ref = publish(writer, stage_folder(writer, {"model/config.json": b"{}", "model/weights.bin": os.urandom(1000)}))
    assert ref.uri == "s3://artifacts/team/run/teacher/" + "k" * 64 and (ref.path / "model" / "config.json").is_file()
    reader = S3Store("s3://artifacts/team/run", tmp_path / "cache-b")  # an empty cache: must download
    found = reader.lookup("teacher", "k" * 64)
    assert found is not None and found.cached and found.metrics == {"auc": 0.7}
    assert (found.path / "model" / "weights.bin").read_bytes() == (ref.path / "model" / "weights.bin").read_bytes()
    assert found.path != ref.path and str(tmp_path / "cache-b") in str(found.path)
    keys = reader.object_keys()
    assert f"team/run/teacher/{'k' * 64}/{STAGE_FILE}" in keys and f"team/run/teacher/{'k' * 64}/metrics.json" in keys


def test_large_files_go_up_in_parts(s3_endpoint, tmp_path):
    store = S3Store("s3://artifacts/multipart", tmp_path / "cache", multipart_threshold=5 * 2**20)
    big = os.urandom(12 * 2**20)
    publish(store, stage_folder(store, {"model/model.safetensors": big}))
    head = store.client.head_object(Bucket="artifacts", Key=f"multipart/teacher/{'k' * 64}/model/model.safetensors")
    assert "-" in head["ETag"] and head["ContentLength"] == len(big)  # a multipart ETag is <md5>-<parts>
    again = S3Store("s3://artifacts/multipart", tmp_path / "other").lookup("teacher", "k" * 64)
    assert (again.path / "model" / "model.safetensors").read_bytes() == big


def test_an_interrupted_upload_is_never_visible(s3_endpoint, tmp_path):
    store = S3Store("s3://artifacts/broken", tmp_path / "cache")
    real_upload = store.client.upload_file
    calls = []

    def failing(path, bucket, key, **kwargs):
        calls.append(key)
        if len(calls) == 2:
            raise OSError("connection reset by peer")
        return real_upload(path, bucket, key, **kwargs)

    store.client.upload_file = failing
    staging = stage_folder(store, {"a.bin": b"a", "b.bin": b"b", "c.bin": b"c"})
    with pytest.raises(StoreError, match="uploading b.bin on s3://artifacts at http://127.0.0.1"):
        publish(store, staging)
    assert any(k.endswith("a.bin") for k in store.object_keys())  # some files went up ...
    assert S3Store("s3://artifacts/broken", tmp_path / "fresh").lookup("teacher", "k" * 64) is None  # ... but no artifact
    store.client.upload_file = real_upload
    publish(store, staging)  # the retry of the stage publishes it completely
    assert S3Store("s3://artifacts/broken", tmp_path / "fresh2").lookup("teacher", "k" * 64) is not None


def _inject_503(store, failures: int):
    from botocore.awsrequest import AWSResponse

    seen = {"n": 0}

    class Raw:
        def stream(self, **kwargs):
            yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def handler(request, **kwargs):
        seen["n"] += 1
        if seen["n"] <= failures:
            return AWSResponse(request.url, 503, {}, Raw())
        return None

    store.client.meta.events.register("before-send.s3.PutObject", handler)
    return seen


def test_throttling_is_retried_with_backoff_then_reported_clearly(s3_endpoint, tmp_path):
    store = S3Store("s3://artifacts/flaky", tmp_path / "cache", max_attempts=4)
    seen = _inject_503(store, failures=2)
    publish(store, stage_folder(store, {"x.bin": b"x"}))
    assert seen["n"] >= 3  # two throttled attempts, then success
    down = S3Store("s3://artifacts/down", tmp_path / "cache2", max_attempts=3)
    _inject_503(down, failures=10**6)
    with pytest.raises(StoreError) as err:
        publish(down, stage_folder(down, {"x.bin": b"x"}))
    message = str(err.value)
    assert "s3://artifacts at http://127.0.0.1" in message and ("SlowDown" in message or "503" in message)
    assert SECRET not in message
    assert S3Store("s3://artifacts/down", tmp_path / "cache3").lookup("teacher", "k" * 64) is None


def test_a_uri_without_bucket_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="names no bucket"):
        S3Store("s3:///nothing", tmp_path)


def test_a_store_down_for_a_while_is_retried_until_it_is_back(s3_endpoint, tmp_path, monkeypatch):
    import threading
    import time

    from moto.server import ThreadedMotoServer

    from recslm.serve.server import free_port

    port = free_port()  # nothing listens here yet: connection refused until the timer starts a server
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    store = S3Store("s3://artifacts/outage", tmp_path / "cache", max_attempts=10)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # same in-process state: the bucket exists
    comes_back = threading.Timer(2.0, server.start)
    comes_back.start()
    started = time.monotonic()
    try:
        publish(store, stage_folder(store, {"x.bin": b"x"}))
        outage_s = time.monotonic() - started
        assert S3Store("s3://artifacts/outage", tmp_path / "reader").lookup("teacher", "k" * 64) is not None
    finally:
        comes_back.join()
        server.stop()
    assert outage_s >= 2.0  # it really waited the outage out


def test_a_store_that_stays_down_fails_clearly_and_may_be_retried_later_a_refusal_may_not(s3_endpoint, tmp_path, monkeypatch):
    from recslm.serve.server import free_port
    from tasks.retry import is_transient

    missing = S3Store("s3://no-such-bucket/x", tmp_path / "cache-a")
    with pytest.raises(StoreError, match="NoSuchBucket") as refused:
        publish(missing, stage_folder(missing, {"x.bin": b"x"}))
    assert not is_transient(refused.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    down = S3Store("s3://artifacts/x", tmp_path / "cache-b", max_attempts=2)
    with pytest.raises(StoreError, match="s3://artifacts at http://127.0.0.1") as unreachable:
        publish(down, stage_folder(down, {"x.bin": b"x"}))
    assert is_transient(unreachable.value) and SECRET not in str(unreachable.value)


def _write(folder, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def test_checkpoints_reach_another_worker_complete_or_not_at_all(s3_endpoint, tmp_path):
    key = "c" * 64
    trainer = S3Store("s3://artifacts/ckpt", tmp_path / "node-a")
    work = trainer.work_dir("distill", key)
    _write(work, {"phase-0/checkpoint-10/model.safetensors": b"w10", "phase-0/checkpoint-10/trainer_state.json": b"{}",
                  "phase-0/checkpoint-20/model.safetensors": b"half-written"})  # checkpoint-20: no marker yet
    assert trainer.sync_work("distill", key) == 2
    elsewhere = S3Store("s3://artifacts/ckpt", tmp_path / "node-b").work_dir("distill", key)
    assert (elsewhere / "phase-0/checkpoint-10/model.safetensors").read_bytes() == b"w10"
    assert (elsewhere / "phase-0/checkpoint-10/trainer_state.json").is_file() and not (elsewhere / "phase-0/checkpoint-20").exists()

    # training goes on: checkpoint-20 completes, the Trainer rotates checkpoint-10 away
    _write(work, {"phase-0/checkpoint-20/model.safetensors": b"w20", "phase-0/checkpoint-20/trainer_state.json": b"{}"})
    shutil.rmtree(work / "phase-0/checkpoint-10")
    assert trainer.sync_work("distill", key) == 2 and trainer.sync_work("distill", key) == 0  # nothing changed the second time
    later = S3Store("s3://artifacts/ckpt", tmp_path / "node-c").work_dir("distill", key)
    assert sorted(p.relative_to(later).as_posix() for p in later.rglob("*") if p.is_file()) == [
        "phase-0/checkpoint-20/model.safetensors", "phase-0/checkpoint-20/trainer_state.json"]
    assert (later / "phase-0/checkpoint-20/model.safetensors").read_bytes() == b"w20"

    # once the stage publishes, its checkpoints are gone from S3 too
    trainer.publish("distill", key, stage_folder(trainer, {"model/x": b"x"}), metrics={}, stage_config={}, input_keys={}, wall_s=1.0)
    assert not [k for k in trainer.object_keys() if "/_work/" in k]


def test_a_failed_stage_leaves_its_checkpoints_for_a_retry_on_another_node(s3_endpoint, prefect_harness, tmp_path):
    from recslm.config import PipelineConfig
    from recslm.stages import Stage
    from tasks.stage import run_stage
    from tasks.tracking import TrackingHandle

    def config(node: str) -> PipelineConfig:
        return PipelineConfig.model_validate({"run": {"root": str(tmp_path / node)}, "store": {"uri": "s3://artifacts/retry", "checkpoint_sync_s": 3600},
                                              "tracking": {"enabled": False}, "registry": {"enabled": False}})  # fmt: skip

    def crashes(config, ctx, inputs):
        _write(ctx.work, {"checkpoint-5/model.safetensors": b"w5", "checkpoint-5/trainer_state.json": b"{}"})
        raise TimeoutError("the node went away")

    with pytest.raises(TimeoutError):
        run_stage(Stage("teacher", lambda config: {"lr": 1}, crashes, computes=False), config("node-a"), TrackingHandle(enabled=False), {})

    seen = {}

    def resumes(config, ctx, inputs):
        seen["files"] = sorted(p.relative_to(ctx.work).as_posix() for p in ctx.work.rglob("*") if p.is_file())
        (ctx.out / "model").mkdir()
        return {"auc_mean": 0.7}

    ref = run_stage(Stage("teacher", lambda config: {"lr": 1}, resumes, computes=False), config("node-b"), TrackingHandle(enabled=False), {})
    assert seen["files"] == ["checkpoint-5/model.safetensors", "checkpoint-5/trainer_state.json"]
    assert ref.metrics == {"auc_mean": 0.7}
