"""Load benchmark for "one member, k candidates" traffic (the paper's Tables 8-10).

Members arrive as a Poisson process (``members_per_s``), or back to back from
``concurrency`` workers (``members_per_s = 0``: the throughput limit). Each member has a
``prefix_tokens``-long prompt and ``candidates`` items of ``candidate_tokens`` each;
members are drawn from a pool of ``member_pool`` distinct members, so the first visit of
a member is *cold* (its prefix is not cached) and later visits are *hot*.

- ``api="score"`` (ranking, output length 1): one ``/v1/score`` request per member with
  its k items; the request latency is the time to first (and only) token. With
  ``split_items`` each candidate is its own request (prefix + one item): the traffic of a
  client that does not group candidates, and, with the prefix cache off, the cost of
  serving without any prefix reuse.
- ``api="generate"``: k streamed ``/generate`` requests per member (prefix + candidate),
  ``output_tokens`` each; TTFT from the first streamed token, TPOT from the rest.

Token ids are random (seeded) and valid for the model's vocabulary: the benchmark
measures the server, not the model's answers. It runs against the local engine or any
SGLang server.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from recslm.serve.client import Client, ServerError, Timing


@dataclass(frozen=True)
class Workload:
    members_per_s: float = 4.0  # 0 = closed loop at ``concurrency``
    candidates: int = 16
    prefix_tokens: int = 512
    candidate_tokens: int = 8
    output_tokens: int = 1
    duration_s: float = 30.0
    member_pool: int = 64
    concurrency: int = 4
    api: str = "score"  # score | generate
    split_items: bool = False  # score: one request per candidate (prefix + 1 item), as a server without prefix sharing sees it
    label_token_ids: tuple[int, ...] = (5, 6)
    vocab_low: int = 10  # random ids avoid the special tokens at the start of the vocabulary
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "members_per_s": self.members_per_s >= 0, "candidates": self.candidates >= 1, "prefix_tokens": self.prefix_tokens >= 1,
            "candidate_tokens": self.candidate_tokens >= 1, "output_tokens": self.output_tokens >= 1, "duration_s": self.duration_s > 0,
            "member_pool": self.member_pool >= 1, "concurrency": self.concurrency >= 1, "api": self.api in ("score", "generate"),
        }  # fmt: skip
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"bench workload: invalid {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")
        if self.api == "score" and self.output_tokens != 1:
            raise ValueError("bench workload: api=score returns one token per candidate; use api=generate for output_tokens > 1")


@dataclass
class MemberResult:
    member: int
    hot: bool
    latency_s: float
    requests: list[Timing] = field(default_factory=list)
    finished_at: float = 0.0  # perf_counter when the member's last answer came (for the timeline)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class _Members:
    def __init__(self, w: Workload, vocab_size: int):
        self.w, self.rng = w, random.Random(w.seed)
        high = vocab_size - 1
        if high <= w.vocab_low:
            raise ValueError(f"bench: vocabulary of {vocab_size} tokens is too small")
        self.prompts = [
            ([self.rng.randint(w.vocab_low, high) for _ in range(w.prefix_tokens)],
             [[self.rng.randint(w.vocab_low, high) for _ in range(w.candidate_tokens)] for _ in range(w.candidates)])
            for _ in range(w.member_pool)
        ]  # fmt: skip
        self.seen: set[int] = set()

    def next(self) -> tuple[int, bool]:
        member = self.rng.randrange(self.w.member_pool)
        hot = member in self.seen
        self.seen.add(member)
        return member, hot


async def _visit(client: Client, w: Workload, members: _Members, member: int, hot: bool) -> MemberResult:
    prefix, items = members.prompts[member]
    started = time.perf_counter()
    if w.api == "score" and w.split_items:
        replies = await asyncio.gather(*(client.score(prefix, [item], list(w.label_token_ids), routing_key=str(member)) for item in items))
        timings = [t for _, t in replies]
    elif w.api == "score":
        _, timing = await client.score(prefix, items, list(w.label_token_ids), routing_key=str(member))
        timings = [timing]
    else:
        replies = await asyncio.gather(*(client.generate(prefix + item, w.output_tokens, routing_key=str(member)) for item in items))
        timings = [t for _, t in replies]
    return MemberResult(member, hot, time.perf_counter() - started, timings, time.perf_counter())


async def run_workload(endpoint: str, w: Workload, vocab_size: int | None = None) -> dict[str, Any]:
    """Drive ``endpoint`` with ``w`` for ``w.duration_s`` seconds; return the measured result."""
    async with Client(endpoint, max_connections=max(64, w.candidates * 8)) as client:
        if not await client.health():
            raise ServerError(f"{endpoint}/health: the server is not up")
        workers = await _router_workers(client)
        info = await _model_info(client, workers)
        before = await _worker_metrics(workers)
        members = _Members(w, vocab_size or int(info.get("vocab_size") or 32000))
        results: list[MemberResult] = []
        errors: list[str] = []
        failed_at: list[float] = []
        started = time.perf_counter()
        deadline = started + w.duration_s

        async def one(member: int, hot: bool) -> None:
            try:
                results.append(await _visit(client, w, members, member, hot))
            except (ServerError, OSError) as exc:
                errors.append(str(exc))
                failed_at.append(time.perf_counter())

        if w.members_per_s > 0:
            rng, tasks, now = random.Random(w.seed + 1), [], time.perf_counter()
            arrival = now
            while arrival < deadline:
                await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
                tasks.append(asyncio.create_task(one(*members.next())))
                arrival += rng.expovariate(w.members_per_s)
            await asyncio.gather(*tasks)
        else:

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    await one(*members.next())

            await asyncio.gather(*(worker() for _ in range(w.concurrency)))
        wall = time.perf_counter() - started
        after = await _worker_metrics(workers)
    result = summarize(w, results, errors, wall, endpoint)
    result["timeline"] = timeline(results, failed_at, started, wall)
    if workers:
        result["scoring_api"] = client.scoring
        result["per_worker"] = _per_worker(before, after)
    return result


async def _model_info(client: Client, workers: list[str]) -> dict[str, Any]:
    """The served model's info: from the server, or (the router does not proxy /model_info)
    from the first worker behind the router that answers; a lost worker is skipped."""
    if not workers:
        return await client.model_info()
    for url in workers:
        try:
            async with Client(url, timeout_s=10) as worker:
                return await worker.model_info()
        except (ServerError, OSError, httpx.HTTPError):
            continue
    raise ServerError(f"{client.base_url}: no worker behind the router answers /model_info")


async def _router_workers(client: Client) -> list[str]:
    """The worker URLs behind ``client``'s endpoint when it is the SGLang router; [] otherwise."""
    if await client.scoring_api() != "generate":
        return []
    reply = await client.http.get("/workers")
    return [w["url"] for w in reply.json().get("workers", [])]


async def _worker_metrics(workers: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each worker's counters (``/metrics_json`` of recslm's engine); None for a worker that
    does not answer (lost, or an SGLang server without that endpoint)."""
    out: dict[str, dict[str, Any] | None] = {}
    for url in workers:
        try:
            async with Client(url, timeout_s=5) as worker:
                reply = await worker.http.get("/metrics_json")
                out[url] = reply.json() if reply.status_code == 200 else None
        except Exception:  # noqa: BLE001 - a lost worker is what a fault bench measures, not an error of the bench
            out[url] = None
    return out


def _per_worker(before: dict[str, dict[str, Any] | None], after: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Requests and prefix-cache hit rate each worker served during the run (None: it did not
    answer at the end). A list, not a mapping keyed by URL: the rows are logged as MLflow
    metrics, whose names cannot hold a URL's colon."""
    rows: list[dict[str, Any]] = []
    for url, start in before.items():
        end = after.get(url)
        if start is None or end is None:
            rows.append({"endpoint": url, "requests": None, "prefix_cache_hit_rate": None, "answered": end is not None})
            continue
        prompt = end["prompt_tokens"] - start["prompt_tokens"]
        hit = (end["cached_tokens"] - start["cached_tokens"]) / prompt if prompt else 0.0
        rows.append({"endpoint": url, "requests": end["requests"] - start["requests"], "prefix_cache_hit_rate": hit, "answered": True})
    return rows


def timeline(results: list[MemberResult], failed_at: list[float], started: float, wall_s: float, windows: int = 5) -> list[dict[str, Any]]:
    """Members answered, errors and p99 member latency per fifth of the run (by when the answer
    or the error came): what a lost worker costs, and when, rather than one p99 for the run."""
    width = wall_s / windows
    rows = []
    for i in range(windows):
        low, high = started + i * width, started + (i + 1) * width
        latencies = [r.latency_s for r in results if low <= r.finished_at < high or (i == windows - 1 and r.finished_at >= high)]
        errors = sum(1 for t in failed_at if low <= t < high or (i == windows - 1 and t >= high))
        rows.append({"from_s": round(i * width, 2), "to_s": round((i + 1) * width, 2), "members": len(latencies), "errors": errors,
                     "p99_ms": 1000 * _percentile(latencies, 99) if latencies else None})  # fmt: skip
    return rows


def summarize(w: Workload, results: list[MemberResult], errors: list[str], wall_s: float, endpoint: str) -> dict[str, Any]:
    requests = [t for r in results for t in r.requests]
    ttft = {"all": [t.ttft_s for t in requests], "cold": [t.ttft_s for r in results if not r.hot for t in r.requests], "hot": [t.ttft_s for r in results if r.hot for t in r.requests]}
    tpot = [(t.e2e_s - t.ttft_s) / (t.output_tokens - 1) for t in requests if t.output_tokens > 1]
    prompt = sum(t.prompt_tokens for t in requests)
    out = {
        "endpoint": endpoint, "workload": asdict(w), "wall_s": wall_s, "members": len(results), "requests": len(requests), "errors": len(errors),
        "error_examples": errors[:3],
        "ttft_ms": {k: {"p50": 1000 * _percentile(v, 50), "p99": 1000 * _percentile(v, 99), "n": len(v)} for k, v in ttft.items()},
        "member_latency_ms": {"p50": 1000 * _percentile([r.latency_s for r in results], 50), "p99": 1000 * _percentile([r.latency_s for r in results], 99)},
        "tpot_ms": 1000 * statistics.fmean(tpot) if tpot else None,
        "throughput": {"members_per_s": len(results) / wall_s, "candidates_per_s": len(results) * w.candidates / wall_s,
                       "output_tokens_per_s": len(results) * w.candidates * w.output_tokens / wall_s},
        "prefix_cache_hit_rate": sum(t.cached_tokens for t in requests) / prompt if prompt else 0.0,
    }  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    """One row of the paper's Tables 8-10 layout, as plain text."""
    w, t = result["workload"], result["ttft_ms"]
    head = f"{'k':>4}{'P':>6}{'N':>4}{'rate/s':>8}{'TTFT p50':>10}{'p99':>8}{'hot p50':>9}{'cold p50':>9}{'member p50':>11}{'TPOT':>7}{'members/s':>10}{'hit':>6}"
    tpot = "" if result["tpot_ms"] is None else f"{result['tpot_ms']:.1f}"
    rate = "max" if w["members_per_s"] == 0 else f"{w['members_per_s']:g}"
    row = (f"{w['candidates']:>4}{w['prefix_tokens']:>6}{w['output_tokens']:>4}{rate:>8}{t['all']['p50']:>10.1f}{t['all']['p99']:>8.1f}"
           f"{t['hot']['p50']:>9.1f}{t['cold']['p50']:>9.1f}{result['member_latency_ms']['p50']:>11.1f}{tpot:>7}"
           f"{result['throughput']['members_per_s']:>10.2f}{result['prefix_cache_hit_rate']:>6.2f}")  # fmt: skip
    return head + "\n" + row + ("" if not result["errors"] else f"\n{result['errors']} errors, e.g. {result['error_examples'][0]}")
