"""The quantize stage: the final student in one scheme (FP8, W8A8-INT, W4A16 GPTQ or QuantEase)
as a compressed-tensors folder, with each layer's error after rounding, GPTQ and QuantEase."""

from __future__ import annotations

import math
from typing import Any

from recslm.stages.base import Stage, StageContext
from recslm.store import ArtifactRef

# the settings each scheme's result depends on (changing QuantEase's sweeps must not redo FP8)
SCHEME_FIELDS = {
    "fp8_dynamic": {"ignore"},
    "w8a8_int": {"ignore", "calibration", "gptq_block_size", "gptq_dampening", "smoothquant_strength"},
    "w4a16_gptq": {"ignore", "calibration", "gptq_block_size", "gptq_dampening", "group_size"},
    "w4a16_quantease": {"ignore", "calibration", "gptq_block_size", "gptq_dampening", "group_size", "quantease_sweeps", "quantease_tol", "quantease_init"},
}


def key(config: Any, model_name: str, scheme: str) -> Any:
    """One scheme's settings and the calibration seed."""
    settings = config.quantize.model_dump(mode="json", include=SCHEME_FIELDS[scheme])
    return {"scheme": scheme, **settings, "seed": config.student_seed()}


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef], model_name: str, scheme: str) -> dict[str, Any]:
    from recslm.quantize.apply import quantize_model  # llm-compressor: only when the stage runs

    metrics = quantize_model(inputs["model"].path / "model", inputs["data"].path, ctx.out, scheme, config.quantize, seed=config.student_seed(), log_dir=ctx.work,
                             task=config.task)  # fmt: skip
    for index, layer in enumerate(metrics["layers"]):  # per-layer errors as curves over depth
        ctx.log_metrics({f"layer/{k}_error": layer[k] for k in ("rtn", "gptq", "quantease") if not math.isnan(layer[k])}, step=index)
    return metrics


STAGE = Stage("quantize", key, body, label=lambda model_name, scheme: f"quantize-{model_name}-{scheme}")
