"""The deploy stage's library side: deploy the final model, verify it, benchmark it.

The smoke test scores the first members of the evaluation split and compares with the
model's offline scores of the same prompts; the benchmark is :mod:`recslm.serve.bench`
with the run's ``bench`` section, against the traffic endpoint. The local engine and the
local fleet are stopped afterwards unless ``serve.keep_running``; a Kubernetes deploy is the
point of the run and keeps serving (the next deploy replaces it, blue/green).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from recslm.config import BenchConfig, EvaluateConfig, ServeConfig
from recslm.data.build import load_split, tokenizer_path
from recslm.data.tokenizer import answer_token_ids, load_tokenizer
from recslm.errors import ConfigError
from recslm.evaluate.scoring import score_records
from recslm.jsonfile import write_json
from recslm.models.factory import load_model
from recslm.models.prefix import make_groups
from recslm.serve import kube_target
from recslm.serve.bench import Workload, run_workload, table
from recslm.serve.deploy import DeployError, LocalTarget, SmokeTest, deploy, score_smoke_test
from recslm.serve.fleet import FleetTarget
from recslm.serve.kube_target import KubernetesTarget
from recslm.serve.limits import limits_of

SMOKE_MEMBERS = 4


def smoke_test_for(model_dir: Path, data_dir: Path, split: str) -> SmokeTest:
    """The smoke test of ``model_dir`` on the first members of the data artifact's ``split``."""
    return offline_smoke_test(model_dir, load_split(data_dir, split), load_tokenizer(tokenizer_path(data_dir)))


def offline_smoke_test(model_dir: Path, records: list, tokenizer: Any, members: int = SMOKE_MEMBERS) -> SmokeTest:
    """Score the first ``members`` of ``records`` offline with ``model_dir``; the smoke test
    expects a server to return the same scores for the same prompts."""
    groups = make_groups(records, tokenizer)[:members]
    subset = [records[i] for g in groups for i in g.record_index]
    expected = score_records(load_model(model_dir), tokenizer, subset).scores
    answers = answer_token_ids(tokenizer)
    return score_smoke_test([g.prefix_ids for g in groups], [g.candidate_ids for g in groups], [answers[1], answers[0]], [[s] for s in expected])


SMOKE_NEW_TOKENS = 8


def generation_smoke_test_for(model_dir: Path, data_dir: Path, split: str, prompts: int = SMOKE_MEMBERS, max_new_tokens: int = SMOKE_NEW_TOKENS) -> SmokeTest:
    """The generative task's smoke test on the first prompts of the data artifact's ``split``."""
    from recslm.data.generation_artifact import load_generation_split
    from recslm.data.tokenizer import encode_prefix

    tokenizer = load_tokenizer(tokenizer_path(data_dir))
    ids = [encode_prefix(tokenizer, r.prompt) for r in load_generation_split(data_dir, split)[:prompts]]
    return generation_smoke_test(load_model(model_dir), ids, max_new_tokens)


def generation_smoke_test(model: Any, prompts: list[list[int]], max_new_tokens: int, tolerance: float = 1e-3) -> SmokeTest:
    """A server's greedy ``/generate`` checked against the model offline, teacher-forced on the
    server's own output: every token it wrote must be the offline argmax (up to ``tolerance``
    in log-probability, so a near-tie decided the other way by another kernel passes) and its
    reported log-probability must equal the offline one. Wrong weights, another tokenizer or
    a broken KV cache fail it; a server that only answers ``/health`` does too."""
    import httpx
    import torch

    def check(endpoint: str) -> dict[str, Any]:
        worst, tokens, started = 0.0, 0, time.perf_counter()
        with httpx.Client(base_url=endpoint, timeout=120) as http:
            for ids in prompts:
                body = {"input_ids": ids, "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0.0}, "return_logprob": True}
                reply = http.post("/generate", json=body)
                if reply.status_code != 200:
                    raise DeployError(f"{endpoint}/generate answered HTTP {reply.status_code}: {reply.text[:300]}")
                out = reply.json()
                written, reported = out["output_ids"], [entry[0] for entry in out["meta_info"]["output_token_logprobs"]]
                if not written:
                    raise DeployError(f"{endpoint}/generate wrote nothing for a {len(ids)}-token prompt")
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids + written[:-1]], device=model.device)).logits[0, len(ids) - 1 :]
                offline = torch.log_softmax(logits.float(), dim=-1)
                for j, token in enumerate(written):
                    worst = max(worst, float(offline[j].max() - offline[j, token]), abs(float(offline[j, token]) - reported[j]))
                tokens += len(written)
        if worst > tolerance:
            raise DeployError(f"{endpoint}: greedy generation differs from the model offline by up to {worst:.3g} in log-probability (tolerance {tolerance:g})")
        return {"requests": len(prompts), "tokens": tokens, "max_abs_diff": worst, "seconds": time.perf_counter() - started}

    return check


def workload(bench: BenchConfig) -> Workload:
    return Workload(
        members_per_s=bench.members_per_s, candidates=bench.candidates, prefix_tokens=bench.prefix_tokens, candidate_tokens=bench.candidate_tokens,
        output_tokens=bench.output_tokens, duration_s=bench.duration_s, member_pool=bench.member_pool, api="score" if bench.output_tokens == 1 else "generate",
    )  # fmt: skip


def deploy_model(
    model_dir: Path, data_dir: Path, out_dir: Path, *, version: str, serve: ServeConfig, bench: BenchConfig, evaluate: EvaluateConfig, state_dir: Path,
    model_name: str = "model", model_uri: str | None = None, task: str = "ranking",
) -> dict[str, Any]:  # fmt: skip
    """Deploy ``model_dir`` as ``version``; return the deploy record and the benchmark result.
    ``task`` chooses the smoke test: scores of known prompts (ranking) or greedy generation (generative).

    ``model_uri`` is where a cluster's workers fetch the same model (its ``s3://`` folder in
    the artifact store); the local targets serve ``model_dir``."""
    target = target_for(serve, state_dir, model_name)
    if isinstance(target, KubernetesTarget):
        if not model_uri or not model_uri.startswith("s3://"):
            raise ConfigError(f"serve.target: kubernetes: the workers download the model from S3, but its artifact is at {model_uri or model_dir}; set store.uri to an s3:// URI")
        served = model_uri
    else:
        served = str(model_dir)
    smoke = generation_smoke_test_for(model_dir, data_dir, evaluate.split) if task == "generative" else smoke_test_for(model_dir, data_dir, evaluate.split)
    result = deploy(target, version, served, smoke, ready_timeout_s=serve.startup_timeout_s)
    keeps = serve.keep_running or isinstance(target, KubernetesTarget)
    metrics: dict[str, Any] = {"deploy": result.dump(), "kept_running": keeps, "target": serve.target}
    if isinstance(target, (FleetTarget, KubernetesTarget)):
        metrics["fleet"] = target.status()
    try:
        if bench.enabled:
            measured = asyncio.run(run_workload(result.traffic_endpoint, workload(bench)))
            write_json(out_dir / "bench.json", measured)
            (out_dir / "bench.txt").write_text(table(measured) + "\n")
            metrics["bench"] = {k: measured[k] for k in ("ttft_ms", "member_latency_ms", "tpot_ms", "throughput", "prefix_cache_hit_rate", "members", "errors", "per_worker") if k in measured}
        if isinstance(target, (FleetTarget, KubernetesTarget)):
            metrics["fleet_after_bench"] = target.status()
    finally:
        if not keeps:
            if isinstance(target, FleetTarget):
                target.shutdown()
            else:
                target.stop(target.active())
    return metrics


def target_for(serve: ServeConfig, state_dir: Path, model_name: str = "model") -> LocalTarget | FleetTarget | KubernetesTarget:
    """The deploy target ``serve.target`` names; a Kubernetes fleet's objects are named after
    ``model_name`` (one router per model, one worker Deployment per version)."""
    limits = limits_of(serve)
    if serve.target == "local":
        return LocalTarget(state_dir, cache_tokens=serve.cache_tokens, limits=limits)
    if serve.target == "fleet":
        return FleetTarget(state_dir, workers=serve.replicas, policy=serve.router_policy, cache_tokens=serve.cache_tokens, threads=1, limits=limits)
    return KubernetesTarget(serve, model_name, api=kube_target.connect())
