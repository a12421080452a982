"""The data stage: ranking records per split (MovieLens or ready-made records) and the tokenizer."""

from __future__ import annotations

from typing import Any

from recslm.stages.base import Stage, StageContext, dump
from recslm.store import ArtifactRef


def key(config: Any) -> Any:
    return dump(config.data)


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    from recslm.data.build import build_data_artifact  # tokenizers, pandas: only when the stage runs

    return build_data_artifact(config.data, ctx.out)


STAGE = Stage("data", key, body, computes=False)
