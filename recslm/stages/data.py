"""The data stage: records per split and the tokenizer. Ranking records (MovieLens or ready-made
records), or generation records (prompt and response: the clothing reviews)."""

from __future__ import annotations

from typing import Any

from recslm.stages.base import Stage, StageContext, without_later_defaults
from recslm.store import ArtifactRef


LATER_DATA_FIELDS = ("max_records", "max_response_chars", "candidate_match")  # settings added after stores were filled


def key(config: Any) -> Any:
    """The data section; a pretrained tokenizer also by the digest of its files (rebuilt in place, it is a new tokenizer)."""
    section = without_later_defaults(config.data, LATER_DATA_FIELDS)
    tokenizer = config.data.tokenizer
    if tokenizer.kind == "pretrained":
        from recslm.store.digest import TOKENIZER_FILES, folder_digest

        section["tokenizer"]["digest"] = folder_digest(tokenizer.path, "data.tokenizer.path", TOKENIZER_FILES)
    return section


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    if config.task == "generative":
        from recslm.data.generation_artifact import build_generation_artifact  # tokenizers, pandas: only when the stage runs

        return build_generation_artifact(config.data, ctx.out)
    from recslm.data.build import build_data_artifact

    return build_data_artifact(config.data, ctx.out)


STAGE = Stage("data", key, body, computes=False)
