"""The ``fleet`` target: SGLang's real router (the sglang-router wheel's Rust binary) in front
of ``recslm serve`` workers. Blue/green through the router's worker API, rollback, scores
through the router equal to offline scores, and a worker killed under load.

The router's import takes ~35 s on a busy 2-core machine; one router serves the whole module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx
import pytest

from recslm.data.tokenizer import answer_token_ids
from recslm.evaluate.scoring import score_records
from recslm.models.factory import load_model, save_model
from recslm.models.prefix import make_groups
from recslm.serve.bench import Workload, run_workload
from recslm.serve.client import Client
from recslm.serve.deploy import DeployError, deploy
from recslm.serve.fleet import FleetTarget
from recslm.serve.release import offline_smoke_test
from tests.helpers import answers_health, tiny_model

pytestmark = pytest.mark.slow
pytest.importorskip("sglang_router", reason="the fleet target needs the sglang-router wheel (make install adds it)")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("fleet-models")
    for name, seed in (("a", 11), ("b", 12)):
        save_model(tiny_model(tokenizer, "llama", seed=seed), tokenizer, root / name)
    return root


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    target = FleetTarget(tmp_path_factory.mktemp("fleet"), workers=2, policy="cache_aware", cache_tokens=20_000, threads=1)
    yield target
    target.shutdown()


def _routed_scores(endpoint, records, tokenizer):
    answers = answer_token_ids(tokenizer)
    groups = make_groups(records, tokenizer)

    async def run():
        out = [0.0] * len(records)
        async with Client(endpoint) as client:
            for group in groups:
                reply, _ = await client.score(group.prefix_ids, group.candidate_ids, [answers[1], answers[0]], routing_key=group.member_id)
                for index, (p_yes, _) in zip(group.record_index, reply["scores"]):
                    out[index] = p_yes
            return out, client.scoring

    return asyncio.run(run())


def test_blue_green_through_the_router_and_rollback(fleet, models, records, tokenizer):
    smoke_a = offline_smoke_test(models / "a", records, tokenizer, members=3)
    smoke_b = offline_smoke_test(models / "b", records, tokenizer, members=3)

    first = deploy(fleet, "1", str(models / "a"), smoke_a, ready_timeout_s=120)
    router = fleet.router()
    assert first.traffic_endpoint == router and first.smoke_direct["endpoints"] == 2 and first.smoke_routed["via"] == "router"
    assert httpx.post(f"{router}/v1/score", json={"query": [1], "items": [[2]], "label_token_ids": [3]}).status_code == 404  # why scoring goes through /generate
    status = fleet.status()
    assert status["healthy"] == 2 and not status["degraded"] and status["version"] == "1"

    # scores through the router equal the offline scores of the same model
    offline = score_records(load_model(models / "a"), tokenizer, records).scores
    routed, api = _routed_scores(router, records, tokenizer)
    assert api == "generate" and max(abs(a - b) for a, b in zip(routed, offline)) < 1e-4

    # blue/green to version 2: the router lists only its workers; version 1's processes are gone
    v1 = fleet.active()
    second = deploy(fleet, "2", str(models / "b"), smoke_b, ready_timeout_s=120)
    v2 = fleet.active()
    assert second.previous == "1" and v2.version == "2"
    assert {w["url"] for w in fleet.registered()} == set(v2.handle["endpoints"])
    assert not any(answers_health(url) for url in v1.handle["endpoints"])
    offline_b = score_records(load_model(models / "b"), tokenizer, records).scores
    routed, _ = _routed_scores(router, records, tokenizer)
    assert max(abs(a - b) for a, b in zip(routed, offline_b)) < 1e-4

    # version 3 passes its direct checks but fails through the router: version 2 is routed again
    calls = []

    def fails_through_the_router(endpoint):
        calls.append(endpoint)
        if endpoint == router:
            raise RuntimeError("routed smoke failed")
        return smoke_a(endpoint)

    with pytest.raises(DeployError, match="(?s)version 3 failed its smoke test through .*traffic is back on 2"):
        deploy(fleet, "3", str(models / "a"), fails_through_the_router, ready_timeout_s=120)
    assert fleet.active().version == "2" and {w["url"] for w in fleet.registered()} == set(v2.handle["endpoints"])
    assert not any(answers_health(url) for url in calls[:2])  # version 3's workers were stopped
    routed, _ = _routed_scores(router, records, tokenizer)
    assert max(abs(a - b) for a, b in zip(routed, offline_b)) < 1e-4




def test_a_worker_killed_under_load_leaves_rotation_and_the_bench_finishes(fleet, models, records, tokenizer):
    """SIGKILL one of two workers during a closed-loop bench through the router: the bench ends
    on time, reports what failed, the survivor carries the rest, and the fleet reads degraded."""
    active = fleet.active()
    assert active is not None and fleet.status()["healthy"] == 2
    victim_url, victim_pid = active.handle["endpoints"][0], active.handle["pids"][0]
    workload = Workload(members_per_s=0, concurrency=4, candidates=4, prefix_tokens=64, candidate_tokens=4, duration_s=8.0, member_pool=16)
    threading.Timer(2.5, os.kill, (victim_pid, signal.SIGKILL)).start()
    started = time.perf_counter()
    result = asyncio.run(run_workload(fleet.router(), workload))
    assert time.perf_counter() - started < 60  # nothing hangs
    survivor = active.handle["endpoints"][1]
    per_worker = {w["endpoint"]: w for w in result["per_worker"]}
    assert result["scoring_api"] == "generate" and per_worker[victim_url]["answered"] is False
    assert per_worker[survivor]["requests"] > 0 and result["members"] > 0
    assert sum(w["members"] for w in result["timeline"]) == result["members"] and sum(w["errors"] for w in result["timeline"]) == result["errors"]
    assert result["timeline"][-1]["members"] > 0  # still answering at the end, on the survivor
    # after the router's health checks, the dead worker is out: every request succeeds again
    deadline = time.monotonic() + 30
    while fleet.status()["healthy"] != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    status = fleet.status()
    assert status["degraded"] and status["healthy"] == 1 and status["declared"] == 2
    again = asyncio.run(run_workload(fleet.router(), Workload(members_per_s=0, concurrency=2, candidates=4, prefix_tokens=32, candidate_tokens=4, duration_s=2.0, member_pool=8)))
    assert again["errors"] == 0 and again["members"] > 0
