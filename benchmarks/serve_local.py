"""Benchmark: the local engine's prefix cache under "one member, k candidates" ranking traffic.

    .venv/bin/python benchmarks/serve_local.py --model runs/store/prune/<key>/model [--prefix-tokens 512] [--candidates 16] [--duration 15] [--json out.json]

Starts ``recslm serve``'s app in-process on a free port (real HTTP, the bench client of
``recslm bench``), and measures, each against a baseline from the same run:
1. hot vs cold prefix: one member at a time (closed loop, 1 worker) from a pool of 8, so
   each member's first visit prefills its P-token prefix and later visits find it in the
   radix cache; ratio = hot TTFT p50 / cold TTFT p50 (target ≤ 0.25).
2. k = 4 vs k = 1 candidates per member, same traffic: member latency p50 ratio (the
   paper's Table 10 finding: ≤ 1.5).
3. throughput: closed loop with 4 workers over a pool of 16 members, prefix cache on vs
   off (``cache_tokens = 0``: each request still computes its prefix once for its k
   items, but nothing carries over between requests); ratio = members/s on / off
   (target ≥ 4); and against no prefix reuse at all (cache off, one request per
   candidate: every candidate prefills the whole prefix, as a server without a prefix
   cache does).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
from pathlib import Path

import torch

from recslm.serve.bench import Workload, run_workload, table
from recslm.serve.server import background_server


def running(model: Path, cache_tokens: int):
    return background_server(model, cache_tokens=cache_tokens)


def measure(endpoint: str, **kwargs) -> dict:
    result = asyncio.run(run_workload(endpoint, Workload(**kwargs)))
    print(table(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prefix-tokens", type=int, default=512)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = {"prefix_tokens": args.prefix_tokens, "duration_s": args.duration, "members_per_s": 0}
    report: dict = {"benchmark": "serve_local", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
                    "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    with running(args.model, cache_tokens=200_000) as url:
        measure(url, **{**base, "duration_s": 2.0, "candidates": args.candidates})  # warm-up
        sequential = measure(url, **base, candidates=args.candidates, concurrency=1, member_pool=8, seed=1)
        k1 = measure(url, **base, candidates=1, concurrency=1, member_pool=8, seed=2)
        k4 = measure(url, **base, candidates=4, concurrency=1, member_pool=8, seed=3)
        cached = measure(url, **base, candidates=args.candidates, concurrency=4, member_pool=16, seed=4)
    with running(args.model, cache_tokens=0) as url:
        measure(url, **{**base, "duration_s": 2.0, "candidates": args.candidates})
        uncached = measure(url, **base, candidates=args.candidates, concurrency=4, member_pool=16, seed=4)
        no_reuse = measure(url, **base, candidates=args.candidates, concurrency=4, member_pool=16, seed=4, split_items=True)
    ratios = {
        "hot_over_cold_ttft_p50": sequential["ttft_ms"]["hot"]["p50"] / sequential["ttft_ms"]["cold"]["p50"],
        "k4_over_k1_member_latency_p50": k4["member_latency_ms"]["p50"] / k1["member_latency_ms"]["p50"],
        "cache_on_over_off_throughput": cached["throughput"]["members_per_s"] / uncached["throughput"]["members_per_s"],
        "cache_on_over_no_prefix_reuse_throughput": cached["throughput"]["members_per_s"] / no_reuse["throughput"]["members_per_s"],
    }
    print(json.dumps(ratios, indent=2))
    report.update(ratios=ratios, runs={"sequential": sequential, "k1": k1, "k4": k4, "cache_on": cached, "cache_off": uncached, "no_prefix_reuse": no_reuse})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
