"""The async client and load benchmark against the real local engine over HTTP, and fleet sizing."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from recslm.models.factory import save_model
from recslm.serve.bench import Workload, run_workload, table
from recslm.serve.capacity import CapacityError, plan
from recslm.serve.client import Client, ServerError
from recslm.serve.server import background_server
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("bench-model")
    save_model(tiny_model(tokenizer, "llama", seed=2), tokenizer, folder)
    with background_server(folder, cache_tokens=20_000) as url:
        yield url
    with pytest.raises(httpx.HTTPError):  # shut down on exit
        httpx.get(f"{url}/health", timeout=2)


def test_ranking_benchmark_measures_hot_and_cold_members(endpoint):
    w = Workload(members_per_s=20, candidates=4, prefix_tokens=64, duration_s=2.0, member_pool=3, seed=1)
    result = asyncio.run(run_workload(endpoint, w))
    assert result["errors"] == 0 and result["members"] >= 10
    assert result["requests"] == result["members"]  # one /v1/score per member
    cold, hot = result["ttft_ms"]["cold"], result["ttft_ms"]["hot"]
    assert cold["n"] <= 3 and hot["n"] == result["members"] - cold["n"]
    # every hot visit finds its whole 64-token prefix cached: the hit rate follows from the counts
    prompt_per_member = 64 + 4 * 8
    assert result["prefix_cache_hit_rate"] == pytest.approx(hot["n"] * 64 / (result["members"] * prompt_per_member), rel=1e-6)
    assert result["throughput"]["candidates_per_s"] == pytest.approx(4 * result["throughput"]["members_per_s"])
    assert "TTFT p50" in table(result)


def test_generative_benchmark_streams_and_measures_tpot(endpoint):
    w = Workload(members_per_s=0, concurrency=2, candidates=2, prefix_tokens=32, output_tokens=4, duration_s=1.5, member_pool=2, api="generate")
    result = asyncio.run(run_workload(endpoint, w))
    assert result["errors"] == 0 and result["requests"] == 2 * result["members"] > 0
    assert result["tpot_ms"] > 0 and result["ttft_ms"]["all"]["p50"] <= result["member_latency_ms"]["p50"]
    assert result["throughput"]["output_tokens_per_s"] == pytest.approx(4 * result["requests"] / result["wall_s"])


def test_client_reports_the_servers_reason(endpoint):
    async def bad():
        async with Client(endpoint) as client:
            await client.score([1, 2], [], [5])

    with pytest.raises(ServerError, match="HTTP 400: .*items is empty"):
        asyncio.run(bad())


def test_benchmark_refuses_a_server_that_is_down():
    with pytest.raises(ServerError, match="not up"):
        asyncio.run(run_workload("http://127.0.0.1:9", Workload(duration_s=0.1)))
    with pytest.raises(ValueError, match="output_tokens > 1"):
        Workload(output_tokens=4)


def _result(rate: float, achieved: float, p99: float, errors: int = 0) -> dict:
    return {"workload": {"members_per_s": rate}, "throughput": {"members_per_s": achieved}, "member_latency_ms": {"p99": p99}, "errors": errors}


def test_capacity_plan_uses_the_highest_load_that_meets_the_slo_and_keeps_up():
    runs = [_result(2, 2.0, 40), _result(4, 3.99, 80), _result(8, 6.1, 60), _result(16, 9.0, 900)]  # 8/s does not keep up
    p = plan(runs, target_members_per_s=20, slo_p99_ms=100, burst=1.5, spare=1, tensor_parallel=2)
    assert p.replica_capacity == 4 and p.replicas_for_load == 8 and p.replicas == 9 and p.gpus == 18
    assert "9 replicas" in p.describe()
    assert plan([_result(0, 5.0, 50)], 10, 100, burst=1.0, spare=0).replicas == 2  # closed loop: its achieved rate
    with pytest.raises(CapacityError, match="p99 <= 30 ms"):
        plan(runs, 20, 30)


def test_cli_bench_writes_a_sweep_and_plan_sizes_the_fleet_from_it(endpoint, tmp_path):
    import json

    from typer.testing import CliRunner

    from recslm.cli import app

    runner = CliRunner()
    out = tmp_path / "bench.json"
    args = ["bench", "--endpoint", endpoint, "--members-per-s", "5", "--members-per-s", "10", "--candidates", "4", "--prefix-tokens", "32", "--duration-s", "1", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert [r["workload"]["members_per_s"] for r in saved["results"]] == [5, 10] and saved["date"]
    planned = runner.invoke(app, ["plan", str(out), "--target", "100", "--slo-p99-ms", "5000", "--tensor-parallel", "2"])
    assert planned.exit_code == 0, planned.output
    assert "replicas" in planned.output and "GPUs at tensor parallel 2" in planned.output
    impossible = runner.invoke(app, ["plan", str(out), "--target", "100", "--slo-p99-ms", "0.001"])
    assert impossible.exit_code != 0 and "no benchmark run meets p99" in impossible.output
    not_bench = tmp_path / "x.json"
    not_bench.write_text("{}")
    assert "not a recslm bench result" in runner.invoke(app, ["plan", str(not_bench), "--target", "1", "--slo-p99-ms", "100"]).output
    assert "config.json missing" in runner.invoke(app, ["serve", str(tmp_path)]).output


def test_the_generation_smoke_test_passes_the_served_model_and_fails_other_weights(endpoint, tokenizer):
    """The generative deploy's check: greedy /generate teacher-forced against the model offline."""
    from recslm.serve.deploy import DeployError
    from recslm.serve.release import generation_smoke_test

    prompts = [tokenizer.encode("Member: 25, M, student\nHistory:\n"), tokenizer.encode("Candidate: a film")]
    served = generation_smoke_test(tiny_model(tokenizer, "llama", seed=2), prompts, max_new_tokens=6)(endpoint)
    assert served["tokens"] == 12 and served["max_abs_diff"] <= 1e-3
    with pytest.raises(DeployError, match="greedy generation differs"):
        generation_smoke_test(tiny_model(tokenizer, "llama", seed=3), prompts, max_new_tokens=6)(endpoint)
