"""Models load from safetensors only and never run code from a checkpoint unless the config says so."""

from __future__ import annotations

import json
import os

import pytest
import torch

from recslm.config import PipelineConfig
from recslm.errors import CheckpointError
from recslm.models.factory import load_model, save_model
from tests.helpers import tiny_model, tiny_tokenizer


class _Payload:
    """A pickle that would create a file if anyone unpickled it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mknod, (self.marker,))


def test_a_pickle_checkpoint_is_refused_without_being_unpickled(tmp_path):
    folder = tmp_path / "pickled"
    save_model(tiny_model(tiny_tokenizer()), tiny_tokenizer(), folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "pwned"
    torch.save({"model.embed_tokens.weight": _Payload(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_model(folder)
    assert not marker.exists()


def test_remote_code_in_a_checkpoint_is_not_run_unless_the_config_allows_it(tmp_path):
    folder = tmp_path / "remote"
    save_model(tiny_model(tiny_tokenizer()), tiny_tokenizer(), folder)
    marker = tmp_path / "ran"
    # its own subclass: loading it marks the class for custom-code saving, which must not leak onto Llama itself
    (folder / "evil_model.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nfrom transformers import LlamaForCausalLM\n\n\nclass EvilForCausalLM(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil_model.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder)  # trust_remote_code defaults to off: the library's own class, the file never imported
    assert type(model).__module__.startswith("transformers.models.llama") and not marker.exists()
    assert PipelineConfig().teacher.trust_remote_code is False
    load_model(folder, trust_remote_code=True)  # the switch on: now the checkpoint's code does run
    assert marker.exists()
