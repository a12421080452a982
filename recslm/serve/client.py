"""An async client for the SGLang API subset (the local engine, any SGLang server, or the SGLang router).

Ranking traffic scores a member's candidates. Straight at a server that is ``/v1/score``;
the SGLang router has no ``/v1/score`` (it answers 404), so through a router the same
scores come from SGLang's prefill-only ``/generate``: the candidates as one batch of
prompts (``query + item``), ``max_new_tokens: 0`` and the label tokens' log-probabilities
at the next position (what SGLang's own ``/v1/score`` does inside a server). One batch per
member keeps its candidates on one worker, beside its cached prefix. ``scoring="auto"``
asks the endpoint once (a router lists its workers at ``GET /workers``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from recslm.errors import RecslmError
from recslm.serve.sglang import MEMBER_ROUTING_HEADER


class ServerError(RecslmError):
    """The server answered with an error status, or its stream broke off; the message carries its
    reason. A 5xx or a broken stream may pass on retry (``transient``); a 4xx is the request's fault."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
        self.transient = status is None or status >= 500


@dataclass
class Timing:
    ttft_s: float  # time to the first output token (the whole request for scoring)
    e2e_s: float
    output_tokens: int
    prompt_tokens: int
    cached_tokens: int


def _check(reply: httpx.Response, endpoint: str) -> Any:
    if reply.status_code != 200:
        try:
            reason = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = reply.text[:500]
        raise ServerError(f"{endpoint}: HTTP {reply.status_code}: {reason}", status=reply.status_code)
    return reply.json()


Scoring = Literal["auto", "score", "generate"]


def is_router(workers_reply: httpx.Response) -> bool:
    """Whether ``GET /workers`` came from the SGLang router (a server answers 404)."""
    if workers_reply.status_code != 200:
        return False
    try:
        return isinstance(workers_reply.json().get("workers"), list)
    except (ValueError, AttributeError):
        return False


def prefill_body(query: str | list[int], items: list, label_token_ids: list[int]) -> dict[str, Any]:
    """SGLang's prefill-only scoring request for one member: its candidates as one batch."""
    if isinstance(query, str):
        prompts: dict[str, Any] = {"text": [query + item for item in items]}
    else:
        prompts = {"input_ids": [list(query) + list(item) for item in items]}
    return {**prompts, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "token_ids_logprob": list(label_token_ids), "logprob_start_len": -1}


def scores_from_prefill(results: Any, label_token_ids: list[int], apply_softmax: bool) -> tuple[list[list[float]], int, int]:
    """``/v1/score``'s scores from a prefill-only batch reply; and prompt and cached tokens."""
    results = results if isinstance(results, list) else [results]
    scores, prompt, cached = [], 0, 0
    for result in results:
        meta = result["meta_info"]
        by_token = {int(t): float(lp) for lp, t, *_ in meta["output_token_ids_logprobs"][0]}
        logprobs = [by_token[t] for t in label_token_ids]
        if apply_softmax:
            top = max(logprobs)
            weights = [math.exp(lp - top) for lp in logprobs]
            scores.append([w / sum(weights) for w in weights])
        else:
            scores.append([math.exp(lp) for lp in logprobs])
        prompt += int(meta.get("prompt_tokens", 0))
        cached += int(meta.get("cached_tokens", 0) or 0)
    return scores, prompt, cached


class Client:
    def __init__(self, base_url: str, timeout_s: float = 120.0, max_connections: int = 256, scoring: Scoring = "auto"):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, limits=limits)
        self.scoring: Scoring = scoring

    async def scoring_api(self) -> Scoring:
        """``score`` (``/v1/score``) or ``generate`` (prefill-only, through a router); asked once."""
        if self.scoring == "auto":
            try:
                self.scoring = "generate" if is_router(await self.http.get("/workers")) else "score"
            except httpx.HTTPError:
                return "score"
        return self.scoring

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def health(self) -> bool:
        try:
            return (await self.http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def model_info(self) -> dict[str, Any]:
        return _check(await self.http.get("/model_info"), f"{self.base_url}/model_info")

    async def score(
        self, query: str | list[int], items: list, label_token_ids: list[int], apply_softmax: bool = True, routing_key: str | None = None
    ) -> tuple[dict[str, Any], Timing]:
        """``routing_key`` (the member id) keeps a member on one replica behind the SGLang
        router's member policy, where its prefix is cached; the local engine ignores it."""
        headers = {MEMBER_ROUTING_HEADER: routing_key} if routing_key is not None else None
        if await self.scoring_api() == "generate":
            started = time.perf_counter()
            raw = _check(await self.http.post("/generate", json=prefill_body(query, items, label_token_ids), headers=headers), f"{self.base_url}/generate")
            elapsed = time.perf_counter() - started
            scores, prompt, cached = scores_from_prefill(raw, label_token_ids, apply_softmax)
            return {"scores": scores, "object": "scoring", "via": "generate"}, Timing(elapsed, elapsed, 1, prompt, cached)
        body = {"query": query, "items": items, "label_token_ids": label_token_ids, "apply_softmax": apply_softmax}
        started = time.perf_counter()
        reply = _check(await self.http.post("/v1/score", json=body, headers=headers), f"{self.base_url}/v1/score")
        elapsed = time.perf_counter() - started
        usage = reply.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        return reply, Timing(elapsed, elapsed, 1, int(usage.get("prompt_tokens", 0)), int(cached or 0))

    async def generate(self, input_ids: list[int], max_new_tokens: int, temperature: float = 0.0, routing_key: str | None = None) -> tuple[dict[str, Any], Timing]:
        """Stream a generation; the first event's arrival is the time to first token."""
        body = {"input_ids": input_ids, "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": temperature}, "stream": True}
        headers = {MEMBER_ROUTING_HEADER: routing_key} if routing_key is not None else None
        started = time.perf_counter()
        first, last = None, None
        async with self.http.stream("POST", "/generate", json=body, headers=headers) as reply:
            if reply.status_code != 200:
                await reply.aread()
                _check(reply, f"{self.base_url}/generate")
            async for line in reply.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    raise ServerError(f"{self.base_url}/generate: {event['error'].get('message')}")
                first = first or time.perf_counter()
                last = event
        ended = time.perf_counter()
        if last is None:
            raise ServerError(f"{self.base_url}/generate: the stream ended without a token")
        meta = last["meta_info"]
        return last, Timing(first - started, ended - started, len(last["output_ids"]), int(meta["prompt_tokens"]), int(meta.get("cached_tokens", 0)))
