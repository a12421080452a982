"""Benchmark: OSSCAR vs magnitude / Wanda / variance pruning on a trained student, and prefill speed.

    .venv/bin/python benchmarks/prune_methods.py --model runs/store/distill/<key>/model --data runs/store/data/<key> [--fraction 0.5 --count 128 --json out.json]

Part 1: one-shot pruning of ``--fraction`` of every layer's MLP neurons (no
re-distillation), each method on the same calibration prompts (in-domain training
records) with sequential layer-by-layer calibration. Reported per method: the summed
reconstruction error of all layers (each layer measured on the inputs that method's own
pruned earlier layers produce), the mean relative error, the test AUC per task and mean,
and seconds. Baselines run with and without the least-squares refit; OSSCAR always
refits (it is part of the method). Ratios are against the best baseline in the same run.

Part 2: the paper's target shape for heads, 37.5% of MLP neurons + 50% of KV groups (one
shot, OSSCAR), and prefill latency at ``--context`` tokens on this CPU, as a ratio to the
unpruned model measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from recslm.data.build import load_split, tokenizer_path
from recslm.data.calibration import calibration_inputs
from recslm.data.tokenizer import load_tokenizer
from recslm.evaluate.evaluate import evaluate_records
from recslm.evaluate.profile import prefill_ms
from recslm.models.factory import load_model, save_model
from recslm.prune.objective import keep_count
from recslm.prune.pruner import Solver, prune_step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained student (Hugging Face folder)")
    parser.add_argument("--data", type=Path, required=True, help="the data stage's folder (records + tokenizer)")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--count", type=int, default=128, help="calibration prompts")
    parser.add_argument("--split", default="test")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/recslm-prune-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    tokenizer = load_tokenizer(tokenizer_path(args.data))
    inputs = calibration_inputs(load_split(args.data, "train"), tokenizer, args.count)
    records = load_split(args.data, args.split)

    def auc_of(model) -> dict:
        folder = args.work / "model"
        save_model(model, tokenizer, folder)
        return evaluate_records(folder, records, data_tokenizer_dir=tokenizer_path(args.data))

    base = auc_of(load_model(args.model))
    width = int(load_model(args.model).config.intermediate_size)
    keep = keep_count(width, args.fraction)
    rows = []
    variants = [("osscar", True)] + [(m, r) for m in ("magnitude", "wanda", "variance") for r in (False, True)]
    for method, refit in variants:
        model = load_model(args.model)
        start = time.perf_counter()
        result = prune_step(model, inputs, mlp_keep=keep, kv_keep=None, solver=Solver(method, refit=refit))
        seconds = time.perf_counter() - start
        totals = result.totals()
        m = auc_of(model)
        rows.append({"method": method, "refit": refit, "error": totals["mlp_error"], "relative_error": totals["mlp_relative_error_mean"],
                     "auc": m["auc"], "auc_mean": m["auc_mean"], "seconds": seconds})  # fmt: skip
    best_baseline = min((r for r in rows if r["method"] != "osscar"), key=lambda r: r["error"])
    best_auc = max(r["auc_mean"] for r in rows if r["method"] != "osscar")
    osscar_row = rows[0]
    print(f"one-shot {args.fraction:.0%} MLP pruning of {args.model} ({width} -> {keep} neurons/layer), {args.count} calibration prompts; "
          f"unpruned AUC mean {base['auc_mean']:.4f}")
    print(f"  {'method':<10}{'refit':>6}{'sum error':>14}{'rel err':>9}{'AUC mean':>10}  per task{'':<22}{'s':>6}")
    for r in rows:
        tasks = " ".join(f"{t} {v:.3f}" for t, v in sorted(r["auc"].items()))
        print(f"  {r['method']:<10}{'yes' if r['refit'] else 'no':>6}{r['error']:>14.4g}{r['relative_error']:>9.4f}{r['auc_mean']:>10.4f}  {tasks:<30}{r['seconds']:>6.1f}")
    print(f"  OSSCAR error / best baseline ({best_baseline['method']}, refit {best_baseline['refit']}) = "
          f"{osscar_row['error'] / best_baseline['error']:.3f}x (target <= 0.8); OSSCAR AUC - best baseline AUC = {osscar_row['auc_mean'] - best_auc:+.4f}")

    unpruned = load_model(args.model)
    pruned = load_model(args.model)
    kv = int(pruned.config.num_key_value_heads)
    prune_step(pruned, inputs, mlp_keep=keep_count(width, 0.375), kv_keep=keep_count(kv, 0.5) if kv > 1 else None, solver=Solver("osscar"))
    # alternate the two models over rounds, so a burst of load elsewhere hits both alike
    rounds = [(prefill_ms(unpruned, args.context, args.repeats), prefill_ms(pruned, args.context, args.repeats)) for _ in range(5)]
    before, after = statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)
    print(f"prefill at {args.context} tokens, {torch.get_num_threads()} threads: unpruned {before:.1f} ms, 37.5% MLP + 50% KV groups "
          f"{after:.1f} ms = {after / before:.2f}x ({1 - after / before:.0%} faster)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; machine: {platform.machine()} {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; load average at start {load:.1f}; date {time.strftime('%Y-%m-%d %H:%M')}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "unpruned_auc": base["auc_mean"], "prefill_ms": [before, after]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
