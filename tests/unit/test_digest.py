"""Stage keys of configs that load from a folder follow the folder's bytes, not its name."""

from __future__ import annotations

import pytest

from recslm.config import load_config
from recslm.errors import ConfigError
from recslm.stages import data as data_stage
from recslm.stages import distill as distill_stage
from recslm.stages import teacher as teacher_stage
from recslm.store.digest import TOKENIZER_FILES, folder_digest


def _folder(tmp_path, **files: str):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_digest_changes_with_bytes_and_names_only(tmp_path):
    folder = _folder(tmp_path, **{"config.json": "{}", "model.safetensors": "a"})
    first = folder_digest(folder, "teacher.path")
    assert folder_digest(folder, "teacher.path") == first
    (folder / "model.safetensors").write_text("b")
    assert folder_digest(folder, "teacher.path") != first
    (folder / "model.safetensors").write_text("a")
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    assert folder_digest(folder, "teacher.path") != first


def _loaded_teacher(folder) -> list[str]:
    return [f"teacher.path={folder}", "data.tokenizer.kind=pretrained", f"data.tokenizer.path={folder}"]


def test_missing_folder_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher.path: .*missing is not a directory"):
        folder_digest(tmp_path / "missing", "teacher.path")


def test_teacher_key_follows_a_rebuilt_checkpoint(tmp_path):
    folder = _folder(tmp_path, **{"config.json": "{}", "model.safetensors": "old"})
    cfg = load_config(None, _loaded_teacher(folder))
    before = teacher_stage.key(cfg)
    (folder / "model.safetensors").write_text("new")
    assert teacher_stage.key(cfg) != before
    with pytest.raises(ConfigError, match="teacher.path"):
        teacher_stage.key(load_config(None, _loaded_teacher(tmp_path / "gone")))


def test_data_key_follows_a_pretrained_tokenizer_but_not_the_weights_beside_it(tmp_path):
    folder = _folder(tmp_path, **{"tokenizer.json": "v1", "model.safetensors": "w1"})
    cfg = load_config(None, ["data.tokenizer.kind=pretrained", f"data.tokenizer.path={folder}"])
    before = data_stage.key(cfg)
    (folder / "model.safetensors").write_text("w2")
    assert data_stage.key(cfg) == before
    (folder / "tokenizer.json").write_text("v2")
    assert data_stage.key(cfg) != before
    assert "tokenizer.json" in TOKENIZER_FILES


def test_student_key_follows_its_initial_weights(tmp_path):
    folder = _folder(tmp_path, **{"config.json": "{}", "model.safetensors": "s1"})
    cfg = load_config(None, ["students=[]"])
    from recslm.config import StudentSpec

    cfg.students = [StudentSpec(name="hf", path=folder)]
    keys = {role: distill_stage.key(cfg, "hf", role) for role in ("student", "sft_baseline")}
    (folder / "model.safetensors").write_text("s2")
    for role, before in keys.items():
        assert distill_stage.key(cfg, "hf", role) != before
