"""Benchmark: continuous batching of ``/generate`` on the local engine, 8 concurrent streams vs 1.

    .venv/bin/python benchmarks/generate_batching.py [--model DIR] [--new-tokens 32] [--duration 10] [--json out.json]

Starts ``recslm serve``'s app in-process on a free port (real HTTP) and runs closed loops of
C clients, each sending review-writing prompts (the bundled clothing reviews) with greedy
decoding of ``--new-tokens`` tokens, for ``--duration`` seconds. Reported, all from this run:
- output tokens/s with 8 clients vs 1 client, continuous batching on (target: at least 3x);
- the same 8 clients with continuous batching off (each generation runs to its end before the
  next starts: the engine before continuous batching), the baseline the gain is measured on;
- request latency p50 and time per output token (TPOT) p50 in each setting.

Without ``--model`` it builds a generative student of the size the generative pipeline
trains (a 4-layer, 128-wide Llama on a 2,000-token BPE vocabulary fitted to the reviews;
random weights: throughput does not depend on them).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

from recslm.config import ArchSpec
from recslm.data.reviews import build_review_splits, texts_of
from recslm.data.tokenizer import train_bpe_tokenizer
from recslm.models.factory import build_model, describe, save_model
from recslm.serve.server import background_server

STUDENT = ArchSpec(family="llama", hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, max_position_embeddings=1024)


def build_student(folder: Path) -> tuple[Path, list[str]]:
    """A generative-student-sized model and the prompts to send it."""
    splits = build_review_splits(max_records=400, max_response_chars=200)
    tokenizer = train_bpe_tokenizer(texts_of(splits["train"]), vocab_size=2000)
    model = build_model(STUDENT, tokenizer, seed=0)
    save_model(model, tokenizer, folder)
    print(f"student: {describe(model)['params'] / 1e6:.2f} M params", flush=True)
    return folder, [r.prompt for r in splits["val"]]


async def closed_loop(url: str, prompts: list[str], clients: int, new_tokens: int, duration_s: float) -> dict[str, float]:
    """``clients`` workers, each sending one request after another until ``duration_s`` is over."""
    latencies: list[float] = []
    tpots: list[float] = []
    tokens = 0
    deadline = time.perf_counter() + duration_s

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        nonlocal tokens
        i = index
        while time.perf_counter() < deadline:
            body = {"text": prompts[i % len(prompts)], "sampling_params": {"max_new_tokens": new_tokens, "temperature": 0}}
            started = time.perf_counter()
            reply = (await client.post(f"{url}/generate", json=body)).raise_for_status().json()
            elapsed = time.perf_counter() - started
            n = len(reply["output_ids"])
            tokens += n
            latencies.append(elapsed)
            tpots.append(elapsed / max(n, 1))
            i += clients

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(c, client) for c in range(clients)))
    wall = time.perf_counter() - started
    return {
        "clients": clients, "requests": len(latencies), "tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": tokens / wall,
        "latency_p50_ms": statistics.median(latencies) * 1000, "tpot_p50_ms": statistics.median(tpots) * 1000,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            model, prompts = build_student(Path(tmp) / "student")
        else:
            model, prompts = args.model, [r.prompt for r in build_review_splits(max_records=400)["val"]]
        rows = {}
        for continuous in (True, False):
            with background_server(model, continuous_batching=continuous) as url:
                asyncio.run(closed_loop(url, prompts, 2, args.new_tokens, 2.0))  # warm-up
                for clients in (1, 8) if continuous else (8,):
                    name = f"{'continuous' if continuous else 'one at a time'}, {clients} client{'s' if clients > 1 else ''}"
                    rows[name] = asyncio.run(closed_loop(url, prompts, clients, args.new_tokens, args.duration))
                    r = rows[name]
                    print(f"{name:28s} {r['tokens_per_s']:8.1f} tokens/s  latency p50 {r['latency_p50_ms']:7.1f} ms  TPOT p50 {r['tpot_p50_ms']:6.2f} ms  ({r['requests']} requests)", flush=True)
    one, eight, baseline = rows["continuous, 1 client"], rows["continuous, 8 clients"], rows["one at a time, 8 clients"]
    ratios = {"continuous_8_vs_1": eight["tokens_per_s"] / one["tokens_per_s"], "continuous_vs_one_at_a_time_8": eight["tokens_per_s"] / baseline["tokens_per_s"]}
    print(f"tokens/s, 8 streams vs 1 (continuous batching): {ratios['continuous_8_vs_1']:.2f}x (target >= 3)")
    print(f"tokens/s at 8 streams, continuous vs one at a time: {ratios['continuous_vs_one_at_a_time_8']:.2f}x")
    if args.json:
        report = {
            "benchmark": "generate_batching", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
            "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "ratios": ratios,
        }  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
