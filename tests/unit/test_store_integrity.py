"""Artifact integrity: a published file that changed is a named error on lookup, and
``recslm store verify`` finds (and can quarantine) what a lookup's cached verification would not."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from recslm.cli import app
from recslm.errors import CheckpointError
from recslm.models.factory import load_model, save_model
from recslm.store import LocalStore, artifact_key
from recslm.store.integrity import CorruptArtifactError, verify_store
from tests.helpers import tiny_model, tiny_tokenizer

runner = CliRunner()


def _published(store: LocalStore, name: str = "prune") -> tuple[str, str]:
    key = artifact_key(name, {"x": 1})
    staging = store.new_staging_dir(name, key)
    (staging / "model").mkdir()
    (staging / "model" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (staging / "notes.txt").write_text("hello")
    store.publish(name, key, staging, metrics={"auc": 0.7}, stage_config={"x": 1}, input_keys={}, wall_s=0.1)
    return name, key


def _flip_a_bit(path, keep_mtime: bool = False) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_stage_json_records_every_files_size_and_hash(tmp_path):
    store = LocalStore(tmp_path)
    stage, key = _published(store)
    files = json.loads((store.artifact_dir(stage, key) / "stage.json").read_text())["files"]
    assert set(files) == {"model/weights.bin", "notes.txt", "metrics.json"}
    assert files["model/weights.bin"]["size"] == 256 * 64 and len(files["model/weights.bin"]["sha256"]) == 64


def test_a_bit_flip_is_a_named_error_on_lookup(tmp_path):
    store = LocalStore(tmp_path)
    stage, key = _published(store)
    assert store.lookup(stage, key) is not None  # verified once, remembered
    _flip_a_bit(store.artifact_dir(stage, key) / "model" / "weights.bin")
    with pytest.raises(CorruptArtifactError, match=rf"artifact prune/{key[:12]} .*model/weights.bin has sha256 .*changed after publishing.*store verify"):
        store.lookup(stage, key)


def test_a_truncated_file_is_caught_by_the_size_check_every_time(tmp_path):
    store = LocalStore(tmp_path)
    stage, key = _published(store)
    store.lookup(stage, key)
    weights = store.artifact_dir(stage, key) / "model" / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptArtifactError, match="model/weights.bin has 100 bytes; stage.json recorded 16,384"):
        store.lookup(stage, key)
    weights.unlink()
    with pytest.raises(CorruptArtifactError, match="model/weights.bin is missing"):
        store.lookup(stage, key)


def test_verify_rehashes_what_a_lookup_remembered_and_quarantines(tmp_path):
    store = LocalStore(tmp_path)
    stage, key = _published(store)
    other = _published(store, "data")
    store.lookup(stage, key)
    # same size, same mtime: the lookup's remembered verification cannot see it; verify does
    _flip_a_bit(store.artifact_dir(stage, key) / "model" / "weights.bin", keep_mtime=True)
    assert store.lookup(stage, key) is not None
    result = runner.invoke(app, ["store", "verify", str(tmp_path)])
    assert result.exit_code == 2
    assert "corrupt" in result.output and "model/weights.bin" in result.output and "1 ok, 1 corrupt" in result.output
    result = runner.invoke(app, ["store", "verify", str(tmp_path), "--quarantine"])
    assert result.exit_code == 0 and "moved to" in result.output
    assert store.lookup(stage, key) is None  # the next run rebuilds it
    assert store.lookup(*other) is not None
    assert [v.status for v in verify_store(tmp_path)] == ["ok"]


def test_artifacts_from_before_manifests_are_unverified_not_refused(tmp_path):
    store = LocalStore(tmp_path)
    stage, key = _published(store)
    record_file = store.artifact_dir(stage, key) / "stage.json"
    record = json.loads(record_file.read_text())
    del record["files"]
    record_file.write_text(json.dumps(record))
    assert store.lookup(stage, key) is not None
    assert [v.status for v in verify_store(tmp_path)] == ["unverified"]


def test_an_unreadable_stage_json_is_corrupt(tmp_path):
    store = LocalStore(tmp_path)
    stage, key = _published(store)
    (store.artifact_dir(stage, key) / "stage.json").write_bytes(b"\xff{not json")
    with pytest.raises(CorruptArtifactError, match="stage.json: unreadable"):
        store.lookup(stage, key)


def test_store_verify_on_a_missing_folder_is_one_clear_error(tmp_path):
    result = runner.invoke(app, ["store", "verify", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a folder" in result.output


# ----------------------------------------------------------------------------- weights files
@pytest.fixture()
def saved(tmp_path):
    tokenizer = tiny_tokenizer()
    folder = tmp_path / "model"
    save_model(tiny_model(tokenizer), tokenizer, folder)
    return folder


def test_a_truncated_safetensors_file_names_the_file(saved):
    weights = next(saved.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=rf"{weights.name}: .* bytes, but its header describes .*truncated"):
        load_model(saved)
    weights.write_bytes(b"\x05\x00")
    with pytest.raises(CheckpointError, match=rf"{weights.name}: not a readable safetensors file"):
        load_model(saved)


def test_a_shard_index_naming_pickle_shards_is_refused(saved):
    (saved / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": "pytorch_model-00001-of-00001.bin"}}))
    (saved / "pytorch_model-00001-of-00001.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="not safetensors; recslm loads safetensors only"):
        load_model(saved)


def test_a_shard_index_naming_missing_or_outside_shards_is_refused(saved):
    index = saved / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"lm_head.weight": "../elsewhere/model.safetensors"}}))
    with pytest.raises(CheckpointError, match="not files in"):
        load_model(saved)
    index.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a readable shard index"):
        load_model(saved)
