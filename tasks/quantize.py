"""The quantize stage as a Prefect task: one task per scheme, so each variant is cached on its own."""

from __future__ import annotations

import math
from typing import Any

from prefect import task

from recslm.config import PipelineConfig
from recslm.store import ArtifactRef
from tasks.dispatch import dispatchable
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle

# the settings each scheme's result depends on (changing QuantEase's sweeps must not redo FP8)
_SCHEME_FIELDS = {
    "fp8_dynamic": {"ignore"},
    "w8a8_int": {"ignore", "calibration", "gptq_block_size", "gptq_dampening", "smoothquant_strength"},
    "w4a16_gptq": {"ignore", "calibration", "gptq_block_size", "gptq_dampening", "group_size"},
    "w4a16_quantease": {"ignore", "calibration", "gptq_block_size", "gptq_dampening", "group_size", "quantease_sweeps", "quantease_tol", "quantease_init"},
}


def quantize_stage_config(config: PipelineConfig, scheme: str) -> dict[str, Any]:
    """What decides one scheme's quantized weights: its settings, and the calibration seed."""
    settings = config.quantize.model_dump(mode="json", include=_SCHEME_FIELDS[scheme])
    return {"scheme": scheme, **settings, "seed": config.student_seed()}


@task(name="quantize", **TASK_DEFAULTS)
@dispatchable
def quantize_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef, model: ArtifactRef, model_name: str, scheme: str) -> ArtifactRef:
    """Quantize the final student with one scheme into a compressed-tensors folder."""

    def body(out, work, run):
        from recslm.quantize.stage import quantize_model  # heavy (llm-compressor): only when the stage runs

        metrics = quantize_model(model.path / "model", data.path, out, scheme, config.quantize, seed=config.student_seed(), log_dir=work)
        for index, layer in enumerate(metrics["layers"]):  # per-layer errors as curves over depth
            errors = {f"layer/{k}_error": layer[k] for k in ("rtn", "gptq", "quantease") if not math.isnan(layer[k])}
            run.tracker.log_metrics(run.run_id, errors, step=index)
        return metrics

    return run_stage("quantize", config, tracking, quantize_stage_config(config, scheme), {"data": data, "model": model}, body, name=f"quantize-{model_name}-{scheme}", runtime=config.runtime)
