"""The data stage: ranking records per split (MovieLens or ready-made records) and the tokenizer."""

from __future__ import annotations

from typing import Any

from recslm.stages.base import Stage, StageContext, dump
from recslm.store import ArtifactRef


def key(config: Any) -> Any:
    """The data section; a pretrained tokenizer also by the digest of its files (rebuilt in place, it is a new tokenizer)."""
    section = dump(config.data)
    tokenizer = config.data.tokenizer
    if tokenizer.kind == "pretrained":
        from recslm.store.digest import TOKENIZER_FILES, folder_digest

        section["tokenizer"]["digest"] = folder_digest(tokenizer.path, "data.tokenizer.path", TOKENIZER_FILES)
    return section


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    from recslm.data.build import build_data_artifact  # tokenizers, pandas: only when the stage runs

    return build_data_artifact(config.data, ctx.out)


STAGE = Stage("data", key, body, computes=False)
