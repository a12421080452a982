"""The serving row (the paper's Table 10 shape): what one member's ranking request costs on the
local engine, by the number of candidates k, with and without the prefix cache, unpruned vs
pruned.

Measured in-process on :class:`recslm.serve.engine.Engine` (the engine ``recslm serve`` runs),
not over HTTP: at these model sizes HTTP and the event loop cost about as much as a forward
(README, Figures: ``benchmarks/serve_local.py``), which would hide what the model's size and
the cache change. A *member* is one test prompt prefix with k candidate texts; its latency is
the wall time of one :meth:`Engine.score` call. With the cache, the member is returning: its
prefix was scored once before, so only the candidates are computed; without it
(``cache_tokens=0``) every request prefills the prefix. The figure per setting is the median
over ``members`` members, after one warm-up request.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from recslm.data.records import RankingRecord
from recslm.errors import ConfigError
from recslm.reproduce.findings import Finding, finding

KS = (1, 4, 16)


def member_prompts(records: Sequence[RankingRecord], members: int, k: int) -> list[tuple[str, list[str]]]:
    """``members`` (prefix, k candidate texts) pairs: each member's own candidates first, then
    candidates of the records after it (the split has fewer than 16 per member)."""
    prefixes: dict[str, int] = {}
    for i, record in enumerate(records):
        prefixes.setdefault(record.prefix, i)
    starts = list(prefixes.values())[:members]
    if len(starts) < members:
        raise ValueError(f"serving: {members} members asked for, the split has {len(starts)} distinct prompts")
    candidates = [r.candidate for r in records]
    return [(records[s].prefix, [candidates[(s + j) % len(candidates)] for j in range(k)]) for s in starts]


def member_latency_ms(model_dir: Path, records: Sequence[RankingRecord], *, members: int, cache: bool, ks: Sequence[int] = KS) -> dict[int, float]:
    """Median member latency (ms) at each k, with the prefix cache (a returning member) or without."""
    from recslm.data.tokenizer import answer_token_ids
    from recslm.serve.engine import Engine, ScoreJob

    engine = Engine(Path(model_dir), cache_tokens=1_000_000 if cache else 0)
    labels = list(answer_token_ids(engine.tokenizer).values())
    out: dict[int, float] = {}
    for k in ks:
        jobs = [ScoreJob(engine.encode_query(prefix), [engine.encode_item(c) for c in items], labels)
                for prefix, items in member_prompts(records, members + 1, k)]  # fmt: skip
        engine.score(jobs[:1])  # warm-up
        if cache:
            engine.score(jobs[1:])  # every member has been here before
        timings = []
        for job in jobs[1:]:
            started = time.perf_counter()
            engine.score([job])
            timings.append((time.perf_counter() - started) * 1000)
        out[k] = statistics.median(timings)
    return out


def serving_values(models: dict[str, Path], records: Sequence[RankingRecord], members: int) -> dict[str, float]:
    """One seed's measurements: ``<model>/<cache|nocache>/k<k>`` -> median ms, for each of ``models`` (name -> folder)."""
    values: dict[str, float] = {}
    for name, folder in models.items():
        for cache in (True, False):
            for k, ms in member_latency_ms(folder, records, members=members, cache=cache).items():
                values[f"{name}/{'cache' if cache else 'nocache'}/k{k}"] = ms
    return values


def serving_findings(per_seed: Sequence[dict[str, float]], members: int) -> list[Finding]:
    """The serving row's findings from each seed's :func:`serving_values` (``student`` and ``pruned``)."""
    def values(key: str, times: float = 1.0) -> list[float]:
        return [times * seed[key] for seed in per_seed]

    def median(key: str) -> str:
        return f"{statistics.median(values(key)):.2f}"

    note = (f"median member latency over {members} test members, ms, k = {', '.join(map(str, KS))}: "
            + "; ".join(f"{m} {c}: " + " / ".join(median(f"{m}/{c}/k{k}") for k in KS) for m in ("student", "pruned") for c in ("cache", "nocache")))  # fmt: skip
    paper = "Table 10: with prefix caching, scoring more candidates per member costs little more; smaller models answer faster"
    metric = "member latency ms"

    def row(claim: str, a: tuple[str, list[float]], b: tuple[str, list[float]]) -> Finding:
        return finding("serving", claim, paper, metric, a[0], b[0], {a[0]: a[1], b[0]: b[1]}, "negative", None, note)

    return [
        row("One request for 16 candidates costs less than 16 one-candidate requests (the prefix is computed once)",
            ("16 x (k = 1), no cache", values("student/nocache/k1", 16)), ("k = 16, no cache", values("student/nocache/k16"))),
        row("With the prefix cache, a returning member's 4 candidates cost less than 1.5x one candidate",
            ("1.5 x (k = 1), cache", values("student/cache/k1", 1.5)), ("k = 4, cache", values("student/cache/k4"))),
        row("The prefix cache lowers a returning member's latency (k = 16)",
            ("k = 16, no cache", values("student/nocache/k16")), ("k = 16, cache", values("student/cache/k16"))),
        row("The pruned student answers faster than the unpruned one (k = 16, no cache)",
            ("unpruned", values("student/nocache/k16")), ("pruned", values("pruned/nocache/k16"))),
    ]  # fmt: skip


def serving_row(student: str, uris: Sequence[dict[str, str]], members: int) -> list[Finding]:
    """The serving row from the most pruned arm's runs (``uris``: per seed, stage -> artifact):
    each seed's student and its pruned self timed on the local engine over the same test members."""
    from recslm.data.build import load_split

    per_seed, splits = [], {}
    for seed_uris in uris:
        remote = [uri for uri in seed_uris.values() if "://" in uri]
        if remote:
            raise ConfigError(f"rows: serving times models on this machine, but the store is remote ({remote[0]}); run it on a local store (store.uri)")
        models = {"student": Path(seed_uris[f"distill.{student}"]) / "model", "pruned": Path(seed_uris["prune"]) / "model"}
        data = seed_uris["data"]  # the same artifact for every seed: read its test split once
        splits[data] = splits.get(data) or load_split(Path(data), "test")
        per_seed.append(serving_values(models, splits[data], members))
    return serving_findings(per_seed, members)
