"""An async client for the SGLang API subset (the local engine or any SGLang server)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

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


def _check(reply: httpx.Response, endpoint: str) -> dict[str, Any]:
    if reply.status_code != 200:
        try:
            reason = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = reply.text[:500]
        raise ServerError(f"{endpoint}: HTTP {reply.status_code}: {reason}", status=reply.status_code)
    return reply.json()


class Client:
    def __init__(self, base_url: str, timeout_s: float = 120.0, max_connections: int = 256):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, limits=limits)

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
        body = {"query": query, "items": items, "label_token_ids": label_token_ids, "apply_softmax": apply_softmax}
        headers = {MEMBER_ROUTING_HEADER: routing_key} if routing_key is not None else None
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
