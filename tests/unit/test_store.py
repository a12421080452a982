"""The content-addressed store: keys, atomic publish, skipping complete artifacts only."""

from __future__ import annotations

import json

from recslm.store import LocalStore, artifact_key


def test_key_depends_on_stage_config_and_inputs():
    base = artifact_key("teacher", {"lr": 1e-3}, {"data": "abc"})
    assert base == artifact_key("teacher", {"lr": 1e-3}, {"data": "abc"})
    assert base != artifact_key("teacher", {"lr": 2e-3}, {"data": "abc"})
    assert base != artifact_key("teacher", {"lr": 1e-3}, {"data": "abd"})
    assert base != artifact_key("distill", {"lr": 1e-3}, {"data": "abc"})


def test_publish_is_atomic_and_lookup_ignores_incomplete(tmp_path):
    store = LocalStore(tmp_path / "store")
    key = artifact_key("data", {"x": 1})
    assert store.lookup("data", key) is None
    # a half-written folder at the final place (no stage.json) must not count as done
    (store.artifact_dir("data", key)).mkdir(parents=True)
    (store.artifact_dir("data", key) / "partial.bin").write_bytes(b"x")
    assert store.lookup("data", key) is None
    store.artifact_dir("data", key).joinpath("partial.bin").unlink()
    store.artifact_dir("data", key).rmdir()

    work = store.work_dir("data", key)
    (work / "checkpoint").write_text("resume me")
    staging = store.new_staging_dir("data", key)
    (staging / "records.txt").write_text("hello")
    ref = store.publish("data", key, staging, metrics={"n": 3}, stage_config={"x": 1}, input_keys={}, wall_s=1.5)
    assert not staging.exists() and not work.exists()
    found = store.lookup("data", key)
    assert found is not None and found.cached and found.metrics == {"n": 3}
    assert (ref.path / "records.txt").read_text() == "hello"
    record = json.loads((ref.path / "stage.json").read_text())
    assert record["stage"] == "data" and record["key"] == key and record["config"] == {"x": 1}


def test_second_publisher_of_same_key_yields_to_first(tmp_path):
    store = LocalStore(tmp_path)
    key = artifact_key("data", {})
    first, second = store.new_staging_dir("data", key), store.new_staging_dir("data", key)
    (first / "who").write_text("first")
    (second / "who").write_text("second")
    store.publish("data", key, first, metrics={}, stage_config={}, input_keys={}, wall_s=0)
    ref = store.publish("data", key, second, metrics={}, stage_config={}, input_keys={}, wall_s=0)
    assert (ref.path / "who").read_text() == "first"
    assert not second.exists()
