"""Benchmark: peak memory of the chunked KD loss vs the naive one (full B×T×V logits), vocab 32k.

    .venv/bin/python benchmarks/kd_loss_memory.py [--batch 4 --seq 512 --hidden 256 --vocab 32000 --chunk 1024]

Each variant runs forward + backward in its own fresh process; the figure is the growth
of the process's peak resident memory (ru_maxrss) over its size right before the loss,
so the two are measured the same way in the same run. Target: chunked <= 0.5x naive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from recslm.train.losses import distill_loss, token_divergence

    torch.manual_seed(0)
    head_s = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    head_t = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    hidden_s = torch.randn(args.batch, args.seq, args.hidden, requires_grad=True)
    hidden_t = torch.randn(args.batch, args.seq, args.hidden)
    mask = torch.ones(args.batch, args.seq, dtype=torch.bool)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if args.variant == "naive":
        student_logits = head_s(hidden_s).float()
        with torch.no_grad():
            teacher_logits = head_t(hidden_t).float()
        loss = token_divergence(student_logits.flatten(0, 1), teacher_logits.flatten(0, 1), "forward_kl").mean()
    else:
        loss = distill_loss(hidden_s, hidden_t, head_s, head_t, mask, kind="forward_kl", chunk_size=args.chunk)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del F
    print(json.dumps({"variant": args.variant, "peak_growth_mb": (peak - before) / 1024, "seconds": seconds, "loss": loss.item()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--chunk", type=int, default=-1, help="rows per chunk (-1: sized by the library to ~4M logits)")
    parser.add_argument("--variant", choices=["naive", "chunked"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return 0
    # glibc's dynamic mmap threshold keeps freed blocks of up to 32 MB in the heap, so the
    # peak RSS of a loop of equal-sized chunks overstates live memory; a fixed threshold
    # makes RSS track live tensors. Both allocators are reported.
    results, ratios = {}, {}
    for allocator, env in (("glibc default", {}), ("fixed mmap threshold", {"MALLOC_MMAP_THRESHOLD_": "1048576"})):
        for variant in ("naive", "chunked"):
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--variant", variant], capture_output=True, text=True, check=True,
                env={**os.environ, **env},
            )
            results[(allocator, variant)] = json.loads(out.stdout.strip().splitlines()[-1])
        ratios[allocator] = results[(allocator, "chunked")]["peak_growth_mb"] / results[(allocator, "naive")]["peak_growth_mb"]
    logits_mb = args.batch * args.seq * args.vocab * 4 / 2**20
    print(f"KD loss, B={args.batch} T={args.seq} H={args.hidden} V={args.vocab} (one float32 logits tensor = {logits_mb:.0f} MB); "
          f"{platform.machine()}, {time.strftime('%Y-%m-%d')}")
    for (allocator, name), r in results.items():
        print(f"  {allocator:20s} {name:8s}: peak +{r['peak_growth_mb']:8.1f} MB, {r['seconds']:.2f} s, loss {r['loss']:.6f}")
    for allocator, ratio in ratios.items():
        print(f"  {allocator:20s} chunked / naive peak memory = {ratio:.3f} (target <= 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
