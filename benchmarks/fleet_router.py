"""The local fleet behind SGLang's router: routing policy, scale-out and a lost worker.

Deploys one model with the ``fleet`` target (the real router from the sglang-router wheel,
``recslm serve`` workers with one torch thread each) and drives "one member, k candidates"
traffic through the router (closed loop, ``--concurrency`` members in flight, a pool of
members that come back, so prefixes can be reused). Measured in the same run:

- prefix-cache hit rate and throughput by router policy at 2 workers (``cache_aware`` keeps
  a member's prefix on one worker; ``round_robin`` spreads it; ``member_hash`` pins members
  by the routing-key header recslm's client sends): the ratio against ``round_robin``. The
  pool of members is sized so that one worker's prefix cache (``--cache-tokens``) holds
  about half of their prefixes: a policy that splits members between workers keeps them
  cached, one that sends every member everywhere evicts them. The hit rate counts a visit's
  prompt tokens as SGLang reports them (every candidate's prompt), so it tops out at
  prefix / (k x (prefix + candidate)) when every visit finds its prefix cached;
- throughput with 2 workers against 1 (same policy): the scale-out ratio;
- a worker SIGKILLed a third of the way through a run: errors, p99, the survivor's share.

    .venv/bin/python benchmarks/fleet_router.py --model models/demo-teacher --duration 20

Run it alone: every worker is a CPU process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import tempfile
import threading
import time
from pathlib import Path

from recslm.serve.bench import Workload, run_workload
from recslm.serve.deploy import deploy
from recslm.serve.fleet import FleetTarget


def _no_smoke(endpoint: str) -> dict:
    return {"max_abs_diff": 0.0, "scores": 0, "via": "skipped (benchmark)"}


def measure(model: Path, workers: int, policy: str, workload: Workload, cache_tokens: int, kill_after_s: float | None = None) -> dict:
    with tempfile.TemporaryDirectory() as state:
        target = FleetTarget(Path(state), workers=workers, policy=policy, threads=1, cache_tokens=cache_tokens)
        try:
            deploy(target, "bench", str(model), _no_smoke, ready_timeout_s=300)
            router = target.router()
            asyncio.run(run_workload(router, Workload(**{**workload.__dict__, "duration_s": 3.0})))  # warm-up (first-call costs)
            if kill_after_s is not None:
                pid = target.active().handle["pids"][0]
                threading.Timer(kill_after_s, os.kill, (pid, signal.SIGKILL)).start()
            started = time.perf_counter()
            result = asyncio.run(run_workload(router, workload))
            result["bench_wall_s"] = time.perf_counter() - started
            result["fleet"] = target.status()
            return result
        finally:
            target.shutdown()


def row(name: str, r: dict) -> str:
    shares = "/".join(str(w["requests"]) if w["requests"] is not None else "lost" for w in r.get("per_worker", []))
    return (f"{name:<28}{r['throughput']['members_per_s']:>10.2f}{r['prefix_cache_hit_rate']:>7.3f}{r['member_latency_ms']['p50']:>9.1f}"
            f"{r['member_latency_ms']['p99']:>9.1f}{r['errors']:>7}  {shares}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo-teacher"))
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--prefix-tokens", type=int, default=180)
    parser.add_argument("--candidate-tokens", type=int, default=28)
    parser.add_argument("--member-pool", type=int, default=200)
    parser.add_argument("--cache-tokens", type=int, default=20_000, help="each worker's prefix-cache budget (tokens)")
    args = parser.parse_args()
    workload = Workload(
        members_per_s=0, concurrency=args.concurrency, candidates=args.candidates, prefix_tokens=args.prefix_tokens,
        candidate_tokens=args.candidate_tokens, duration_s=args.duration, member_pool=args.member_pool,
    )  # fmt: skip
    print(f"{platform.node()}: {os.cpu_count()} CPUs; model {args.model}; {args.duration:g} s per run, {args.concurrency} members in flight, "
          f"k={args.candidates}, prefix {args.prefix_tokens} tokens, pool {args.member_pool} members, {args.cache_tokens} cached tokens per worker "
          f"(the hit rate's ceiling: {args.prefix_tokens / (args.candidates * (args.prefix_tokens + args.candidate_tokens)):.3f})", flush=True)  # fmt: skip
    print(f"{'fleet':<28}{'members/s':>10}{'hit':>7}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}  requests per worker", flush=True)
    runs = {}
    for name, workers, policy in (("1 worker, cache_aware", 1, "cache_aware"), ("2 workers, round_robin", 2, "round_robin"),
                                  ("2 workers, cache_aware", 2, "cache_aware"), ("2 workers, member_hash", 2, "member_hash")):  # fmt: skip
        runs[name] = measure(args.model, workers, policy, workload, args.cache_tokens)
        print(row(name, runs[name]), flush=True)
    lost = measure(args.model, 2, "cache_aware", workload, args.cache_tokens, kill_after_s=args.duration / 3)
    print(row("2 workers, 1 killed at 1/3", lost), flush=True)
    for window in lost["timeline"]:
        p99 = "-" if window["p99_ms"] is None else f"{window['p99_ms']:.0f} ms"
        print(f"  {window['from_s']:>5.1f}-{window['to_s']:<5.1f} s: {window['members']:>4} members, {window['errors']:>3} errors, p99 {p99}")
    rr = runs["2 workers, round_robin"]
    for name in ("2 workers, cache_aware", "2 workers, member_hash"):
        r = runs[name]
        print(f"{name} vs round_robin: hit rate {r['prefix_cache_hit_rate']:.3f} vs {rr['prefix_cache_hit_rate']:.3f}; "
              f"throughput {r['throughput']['members_per_s'] / rr['throughput']['members_per_s']:.2f}x")  # fmt: skip
    one, two = runs["1 worker, cache_aware"], runs["2 workers, cache_aware"]
    print(f"scale-out: 2 workers / 1 worker throughput = {two['throughput']['members_per_s'] / one['throughput']['members_per_s']:.2f}x")
    print(f"lost worker: {lost['errors']} errors of {lost['members'] + lost['errors']} members, p99 {lost['member_latency_ms']['p99']:.0f} ms "
          f"(vs {two['member_latency_ms']['p99']:.0f} ms unharmed), bench wall {lost['bench_wall_s']:.1f} s for {args.duration:g} s; "
          f"fleet afterwards: {lost['fleet']['healthy']}/{lost['fleet']['declared']} healthy, degraded={lost['fleet']['degraded']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
