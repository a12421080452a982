"""Benchmark: QuantEase vs GPTQ on single layers — reconstruction error and time, same grid.

    .venv/bin/python benchmarks/quantease_layer.py [--shapes 256x256,1024x1024,1024x2816] [--tokens 4096] [--sweeps 20] [--tol 1e-3] [--group-size 128] [--json out.json]

For each ``out × in`` shape: correlated SwiGLU-like inputs X (4096 tokens), Σ = XᵀX, a
random weight, and the W4 group grid of llm-compressor's min-max observer (symmetric).
It runs round-to-nearest, llm-compressor's GPTQ (``quantize_weight``, static activation
order, 1% damping: what ``w4a16_gptq`` runs) and recslm's QuantEase from GPTQ's result
and from rounding, and reports each one's relative error ``tr(ΔΣΔᵀ)/tr(WΣWᵀ)`` and time.
The baseline is GPTQ, measured in the same run: error ratio QuantEase/GPTQ (lower is
better) and time ratio QuantEase/GPTQ.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from recslm.quantize.grid import symmetric_grid
from recslm.quantize.quantease import quantease, relative_error


def problem(out: int, columns: int, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(tokens, 64, generator=g)
    gate, up = torch.randn(64, columns, generator=g), torch.randn(64, columns, generator=g)
    x = torch.nn.functional.silu(z @ gate) * (z @ up) / 8  # correlated, heavy-tailed like an MLP activation
    weight = torch.randn(out, columns, generator=g) / columns**0.5
    return weight, x.T @ x / tokens


def gptq(weight: torch.Tensor, gram: torch.Tensor, grid, group_size: int) -> torch.Tensor:
    from compressed_tensors.quantization import QuantizationArgs
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight

    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size, actorder="static")
    quantized, _losses, _fallback = quantize_weight(
        weights=weight[None].clone(), hessians=gram[None].clone(), scale=grid.scale[None], zero_point=grid.zero_point.to(torch.int8)[None],
        global_scale=None, quant_args=args, blocksize=128, percdamp=0.01,
    )  # fmt: skip
    return quantized[0]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="256x256,1024x1024,1024x2816")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-3, help="QuantEase's relative-improvement stop (recslm's default)")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warm_w, warm_g = problem(64, 128, 256, seed=99)
    gptq(warm_w, warm_g, symmetric_grid(warm_w, bits=4, group_size=64), 64)  # first call pays one-off setup: not GPTQ's time
    rows = []
    for index, shape in enumerate(args.shapes.split(",")):
        out, columns = (int(v) for v in shape.lower().split("x"))
        weight, gram = problem(out, columns, args.tokens, seed=index)
        grid = symmetric_grid(weight, bits=4, group_size=min(args.group_size, columns))
        rtn = grid.project(weight)
        g, g_s = timed(lambda: gptq(weight, gram, grid, min(args.group_size, columns)))
        assert torch.equal(grid.project(g), g), "GPTQ's result is not on the benchmark's grid"
        qe, qe_s = timed(lambda: quantease(weight, gram, grid, init=g, sweeps=args.sweeps, tol=args.tol))
        qr, qr_s = timed(lambda: quantease(weight, gram, grid, sweeps=args.sweeps, tol=args.tol))
        row = {
            "shape": f"{out}x{columns}",
            "error": {"rtn": relative_error(weight, rtn, gram), "gptq": relative_error(weight, g, gram),
                      "quantease_from_gptq": relative_error(weight, qe.weight, gram), "quantease_from_rtn": relative_error(weight, qr.weight, gram)},
            "seconds": {"gptq": g_s, "quantease_from_gptq": qe_s, "quantease_from_rtn": qr_s},
            "sweeps": {"from_gptq": qe.sweeps, "from_rtn": qr.sweeps},
        }  # fmt: skip
        row["error_ratio_vs_gptq"] = row["error"]["quantease_from_gptq"] / row["error"]["gptq"]
        row["time_ratio_vs_gptq"] = qe_s / g_s
        rows.append(row)
        e, s = row["error"], row["seconds"]
        print(
            f"{row['shape']:>10}  error rtn {e['rtn']:.3e}  gptq {e['gptq']:.3e}  quantease(gptq) {e['quantease_from_gptq']:.3e} "
            f"[{row['error_ratio_vs_gptq']:.3f}× gptq, {qe.sweeps} sweeps]  quantease(rtn) {e['quantease_from_rtn']:.3e}  |  "
            f"time gptq {s['gptq']:.2f} s  quantease {s['quantease_from_gptq']:.2f} s [{row['time_ratio_vs_gptq']:.1f}×]",
            flush=True,
        )
    report = {
        "benchmark": "quantease_layer", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "args": vars(args) | {"json": str(args.json) if args.json else None}, "rows": rows,
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
