"""The quantize stage's library side: a student folder in, one compressed-tensors folder out.

Calibration prompts are the training records exactly as recslm scores them (or generic
text), picked reproducibly. llm-compressor runs the scheme's recipe (see
:mod:`recslm.quantize.recipes`) and saves the model compressed; the layer-wise errors of
the GPTQ-based schemes are returned for the stage record and the QuantEase comparison.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from recslm.config import QuantizeConfig
from recslm.data.build import tokenizer_path
from recslm.data.calibration import artifact_calibration_inputs
from recslm.data.tokenizer import load_tokenizer
from recslm.models.factory import count_parameters, directory_bytes, load_model
from recslm.quantize.recipes import GROUPED_SCHEMES, build_recipe, check_group_size


def layer_summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean relative errors per solver, and on how many layers QuantEase beat GPTQ."""
    if not reports:
        return {}
    summary: dict[str, Any] = {"layers": len(reports)}
    for solver in ("rtn", "gptq", "quantease"):
        values = [r[solver] for r in reports if not math.isnan(r[solver])]
        if values:
            summary[f"{solver}_mean_error"] = statistics.fmean(values)
    refined = [r for r in reports if not math.isnan(r["quantease"])]
    if refined:
        summary["quantease_below_gptq"] = sum(r["quantease"] < r["gptq"] for r in refined)
        summary["quantease_below_gptq_share"] = summary["quantease_below_gptq"] / len(refined)
    return summary


def _calibration_dataset(inputs: list[torch.Tensor]) -> Any:
    from datasets import Dataset

    ids = [t.tolist() for t in inputs]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})


def quantize_model(
    model_dir: Path, data_dir: Path, out_dir: Path, scheme: str, cfg: QuantizeConfig, seed: int, log_dir: Path | None = None, task: str = "ranking"
) -> dict[str, Any]:
    """Quantize the model in ``model_dir`` with ``scheme`` into ``out_dir/model``; return the stage metrics.
    ``task`` decides what the calibration prompts are (:func:`artifact_calibration_inputs`)."""
    from llmcompressor import oneshot

    started = time.perf_counter()
    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    model = load_model(model_dir)
    params = count_parameters(model)  # saving compresses the model in place (packed weights)
    if scheme in GROUPED_SCHEMES:
        check_group_size(model, cfg.group_size, cfg.ignore)  # before any calibration work
    recipe = build_recipe(scheme, cfg)
    inputs = artifact_calibration_inputs(cfg.calibration, data_dir, tokenizer, seed, task)
    oneshot(
        model=model,
        dataset=_calibration_dataset(inputs),
        recipe=recipe,
        num_calibration_samples=len(inputs),
        max_seq_length=max(len(t) for t in inputs),
        shuffle_calibration_samples=False,
        log_dir=str(log_dir) if log_dir else None,
    )
    folder = out_dir / "model"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), save_compressed=True)
    tokenizer.save_pretrained(str(folder))
    reports = [r.dump() for modifier in recipe for r in getattr(modifier, "layer_reports", [])]
    return {
        "scheme": scheme,
        "group_size": cfg.group_size if scheme in GROUPED_SCHEMES else None,
        "calibration_prompts": len(inputs),
        "params": params,
        "bytes_before": directory_bytes(model_dir),
        "bytes": directory_bytes(folder),
        "layers": reports,
        "layer_errors": layer_summary(reports),
        "wall_s": round(time.perf_counter() - started, 2),
    }
