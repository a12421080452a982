"""The local engine's HTTP server (``recslm serve MODEL_DIR --port N``): FastAPI on uvicorn.

One worker thread owns the engine (torch and the radix cache are used from it only).
Requests wait in a queue; the batcher takes everything that has arrived while the worker
was busy (and, with ``batch_window_ms`` > 0, what arrives within that window after the
first; 0 by default: waiting costs every request its latency) and hands it over in one
go: all ``/v1/score`` requests of a batch share one suffix forward over their items,
``/generate`` requests run after them. A bad request gets a 400 with the reason (pydantic
validation errors too, not FastAPI's 422); an unexpected error fails that request (500)
and leaves the server up, and never the other requests of its batch: a batch that fails is
re-run one request at a time. What one request may ask is bounded (:mod:`recslm.serve.limits`):
the body's bytes before it is parsed, the item count before tokenizing, the tokens after;
tokenizing runs off the event loop, so a large body never stalls ``/health``. On SIGTERM
uvicorn stops accepting and finishes what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recslm.serve.api import GenerateRequest, ScoreRequest, generate_response, score_response
from recslm.serve.decode import ContinuousBatch, DecodeRequest
from recslm.serve.engine import Engine, RequestError, ScoreJob
from recslm.serve.limits import ServeLimits, over_limit


@dataclass
class _Pending:
    kind: str  # "score" | "generate"
    payload: Any
    future: asyncio.Future


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets a 413 before it is parsed. The
    Content-Length header is checked first; a body sent without one (chunked) is counted as
    it arrives and refused at the limit (an HTTPException, which FastAPI's body parsing
    passes through to the app's handler)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            message = over_limit("request body bytes", int(declared), "max_body_bytes", self.limit)
            return await _error(413, message)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, over_limit("request body bytes", received, "max_body_bytes", self.limit) + " (so far)")
            return message

        await self.app(scope, counted, send)


class Batcher:
    """Collects requests that arrive together and runs them on the engine's single worker thread.

    ``/generate`` requests are continuously batched (``recslm.serve.decode``): they join the
    running decode batch, which advances one token per loop turn, between which newly arrived
    requests (and scoring) are served. With ``continuous=False`` each generation runs to its
    end before the next starts (the baseline ``benchmarks/generate_batching.py`` measures)."""

    def __init__(self, engine: Engine, window_ms: float = 0.0, continuous: bool = True):
        self.engine = engine
        self.window = window_ms / 1000
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.lock = threading.Lock()  # the engine is used by one thread at a time
        self.decoding = ContinuousBatch(engine) if continuous else None
        self.batches = 0
        self.batched_requests = 0

    async def submit(self, kind: str, payload: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(kind, payload, future))
        return await future

    @property
    def decoding_active(self) -> bool:
        return self.decoding is not None and self.decoding.active

    async def run(self) -> None:
        while True:
            batch: list[_Pending] = []
            if not self.decoding_active:  # idle: wait for work (and the window's stragglers)
                batch.append(await self.queue.get())
                if self.window:
                    await asyncio.sleep(self.window)
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if batch:
                self.batches += 1
                self.batched_requests += len(batch)
                await asyncio.to_thread(self._work, batch)
            if self.decoding_active:
                await asyncio.to_thread(self._step)

    def _work(self, batch: list[_Pending]) -> None:
        with self.lock:
            scores = [p for p in batch if p.kind == "score"]
            if scores:
                self._settle(scores, self.engine.score)
            for p in batch:
                if p.kind in ("generate", "generate_stream") and self.decoding is not None:
                    self._join(p)
                elif p.kind == "generate":
                    self._settle([p], lambda payloads: [self.engine.generate(**payloads[0])])
                elif p.kind == "prompt_logprobs":
                    self._settle([p], lambda payloads: [self.engine.prompt_logprobs(**payloads[0])])

    def _join(self, p: _Pending) -> None:
        """Enter a generation into the decode batch. A plain one settles when it is done; a
        streamed one (payload: the request and a queue for its tokens) settles once it is in."""
        loop = p.future.get_loop()
        streamed = p.kind == "generate_stream"
        kwargs, sink = (p.payload["request"], p.payload["sink"]) if streamed else (p.payload, None)
        try:
            self.decoding.join(
                DecodeRequest(**kwargs),
                on_done=(lambda result: sink.put(None)) if streamed else (lambda result: loop.call_soon_threadsafe(_set_result, p.future, result)),
                on_token=(lambda *event: sink.put(event)) if streamed else None,
                on_error=(lambda exc: sink.put(exc)) if streamed else (lambda exc: loop.call_soon_threadsafe(_set_exception, p.future, exc)),
            )
        except Exception as exc:  # noqa: BLE001 - a request the model cannot take fails alone
            loop.call_soon_threadsafe(_set_exception, p.future, exc)
            return
        if streamed:
            loop.call_soon_threadsafe(_set_result, p.future, None)

    def _step(self) -> None:
        """One decode step of every active generation; a step that fails fails its requests only."""
        with self.lock:
            try:
                self.decoding.step()
            except Exception as exc:  # noqa: BLE001 - the server stays up; the batch's requests get the error
                self.decoding.fail_all(exc)

    def _settle(self, pending: list[_Pending], compute: Callable[[list[Any]], list[Any]]) -> None:
        """Run ``compute`` over the batch's payloads; if it fails and the batch holds more than
        one request, run each alone, so only the request that fails gets the error."""
        try:
            results = compute([p.payload for p in pending])
        except Exception as exc:  # noqa: BLE001 - one request's failure must not stop the server or its batch
            if len(pending) > 1:
                for p in pending:
                    self._settle([p], compute)
                return
            pending[0].future.get_loop().call_soon_threadsafe(_set_exception, pending[0].future, exc)
            return
        for p, result in zip(pending, results):
            p.future.get_loop().call_soon_threadsafe(_set_result, p.future, result)


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def create_app(
    model_dir: Path, *, cache_tokens: int = 200_000, batch_window_ms: float = 0.0, threads: int | None = None, limits: ServeLimits | None = None,
    continuous_batching: bool = True,
) -> FastAPI:  # fmt: skip
    """The FastAPI app serving the model in ``model_dir`` (loaded once, at startup);
    ``continuous_batching`` off runs generations one after the other (a baseline)."""
    state: dict[str, Any] = {}
    limits = limits or ServeLimits()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await asyncio.to_thread(Engine, model_dir, cache_tokens=cache_tokens, threads=threads, limits=limits)
        batcher = Batcher(engine, batch_window_ms, continuous=continuous_batching)
        state.update(engine=engine, batcher=batcher, task=asyncio.create_task(batcher.run()), name=Path(model_dir).name)
        yield
        state["task"].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state["task"]

    app = FastAPI(title="recslm local engine", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(400, f"invalid request: {reasons}")

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body it cannot parse, e.g. JSON nested too deep; 404; 405)
        return _error(exc.status_code, f"invalid request: {exc.detail}" if exc.status_code == 400 else str(exc.detail))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"{type(exc).__name__}: {exc}")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({})

    @app.get("/health_generate")
    async def health_generate() -> JSONResponse:
        engine: Engine = state["engine"]
        await state["batcher"].submit("generate", {"ids": [engine.pad_id, engine.pad_id], "max_new_tokens": 1, "temperature": 0.0})
        return JSONResponse({})

    @app.get("/model_info")
    async def model_info() -> dict[str, Any]:
        engine: Engine = state["engine"]
        return {
            "model_path": str(engine.model_dir), "tokenizer_path": str(engine.model_dir), "is_generation": True,
            "context_length": engine.context_length, "vocab_size": engine.vocab_size, "cache_tokens": engine.cache.budget,
        }  # fmt: skip

    @app.get("/metrics_json")
    async def metrics() -> dict[str, Any]:
        engine: Engine = state["engine"]
        batcher: Batcher = state["batcher"]
        return {
            "requests": engine.stats.requests, "prompt_tokens": engine.stats.prompt_tokens, "cached_tokens": engine.stats.cached_tokens,
            "cache_hit_rate": engine.stats.hit_rate, "cached_tokens_in_tree": engine.cache.tokens, "evicted_tokens": engine.cache.evicted,
            "batches": batcher.batches, "batched_requests": batcher.batched_requests,
            "decode_steps": batcher.decoding.steps if batcher.decoding else 0,
            "decode_rows_per_step": batcher.decoding.row_steps / batcher.decoding.steps if batcher.decoding and batcher.decoding.steps else 0.0,
        }  # fmt: skip

    @app.post("/v1/score")
    async def score(body: ScoreRequest) -> dict[str, Any]:
        engine: Engine = state["engine"]
        if len(body.items) > limits.max_items:
            raise RequestError(over_limit("items", len(body.items), "max_items", limits.max_items))
        query, items = await asyncio.to_thread(lambda: (engine.encode_query(body.query), [engine.encode_item(i) for i in body.items]))
        total = len(query) + sum(map(len, items))
        if total > limits.max_request_tokens:
            raise RequestError(over_limit("request tokens (query + items)", total, "max_request_tokens", limits.max_request_tokens))
        engine.check_ids(query, "query", extra=max(map(len, items)))
        for i, item in enumerate(items):
            engine.check_ids(item, f"items[{i}]")
        labels = body.label_token_ids
        engine.check_ids(labels, "label_token_ids")
        result = await state["batcher"].submit("score", ScoreJob(query, items, labels, body.apply_softmax))
        return score_response(result.scores, body.model or state["name"], result.prompt_tokens, result.cached_tokens)

    @app.post("/generate", response_model=None)
    async def generate(body: GenerateRequest) -> dict[str, Any] | list[dict[str, Any]] | StreamingResponse:
        engine: Engine = state["engine"]
        sp = body.sampling_params
        what = "text" if body.text is not None else "input_ids"
        if len(body.prompts) > limits.max_items:
            raise RequestError(over_limit("prompts in the batch", len(body.prompts), "max_items", limits.max_items))
        if body.text is not None:
            prompts = await asyncio.to_thread(lambda: [engine.encode_query(t) for t in body.prompts])
        else:
            prompts = [list(p) for p in body.prompts]
        total = sum(len(ids) + sp.max_new_tokens for ids in prompts)
        if total > limits.max_request_tokens:
            raise RequestError(over_limit("request tokens (prompts + max_new_tokens)", total, "max_request_tokens", limits.max_request_tokens))
        for i, ids in enumerate(prompts):
            engine.check_ids(ids, f"{what}[{i}]" if body.batched else what, extra=sp.max_new_tokens)
        if body.token_ids_logprob:
            engine.check_ids(body.token_ids_logprob, "token_ids_logprob")
        rid = body.rid or uuid.uuid4().hex
        if body.prompt_logprobs:
            for i, (ids, start) in enumerate(zip(prompts, body.starts)):
                if start >= len(ids):
                    raise RequestError(f"logprob_start_len: {start} is not a position of {what}[{i}] ({len(ids)} tokens)")
            results = await _prompt_logprobs(state["batcher"], prompts, body, rid)
            return results if body.batched else results[0]
        if sp.max_new_tokens == 0:
            results = await _prefill_only(state["batcher"], prompts, body.token_ids_logprob or [], rid)
            return results if body.batched else results[0]
        runs = [{"ids": ids, "max_new_tokens": sp.max_new_tokens, "temperature": sp.temperature, "top_p": sp.top_p, "seed": sp.seed,
                 "token_ids_logprob": body.token_ids_logprob, "stop_token_ids": sp.stop_token_ids} for ids in prompts]  # fmt: skip
        if body.stream:
            return StreamingResponse(_stream(state, runs[0], body, rid), media_type="text/event-stream")
        replies = []
        started = time.perf_counter()  # a batch's prompts decode together (continuous batching)
        results = await asyncio.gather(*(state["batcher"].submit("generate", kwargs) for kwargs in runs))
        for i, (kwargs, result) in enumerate(zip(runs, results)):
            ids = kwargs["ids"]
            meta = _meta(rid if not body.batched else f"{rid}-{i}", len(ids), result.output_ids, result.cached_tokens, time.perf_counter() - started, sp.max_new_tokens)
            if body.return_logprob:
                meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(result.output_token_logprobs, result.output_ids)]
            if body.token_ids_logprob:
                meta["output_token_ids_logprobs"] = [[[lp, t, None] for lp, t in zip(row, body.token_ids_logprob)] for row in result.output_token_ids_logprobs]
            replies.append(generate_response(result.output_ids, result.text, meta))
        return replies if body.batched else replies[0]

    return app


def _common_prefix(prompts: list[list[int]]) -> int:
    """Length of the prefix all prompts share, leaving every prompt at least one token of its own."""
    shortest = min(map(len, prompts))
    length = 0
    while length < shortest - 1 and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


async def _prefill_only(batcher: Batcher, prompts: list[list[int]], token_ids: list[int], rid: str) -> list[dict[str, Any]]:
    """SGLang's ``max_new_tokens: 0`` request: the log-probabilities of ``token_ids`` at the
    position after each prompt, nothing generated. A batch (one member's candidates, as the
    client sends them through the router) shares its common prefix: it runs as one scoring
    job, the prefix from the radix cache and the remainders packed in one forward, exactly
    as ``/v1/score`` would; prompts with no common prefix run one job each."""
    started = time.perf_counter()
    shared = _common_prefix(prompts) if len(prompts) > 1 else len(prompts[0]) - 1
    if shared:
        job = ScoreJob(prompts[0][:shared], [p[shared:] for p in prompts], token_ids, log=True)
        results = [await batcher.submit("score", job)]
        rows = results[0].scores
    else:
        results = [await batcher.submit("score", ScoreJob(p[:-1], [p[-1:]], token_ids, log=True)) if len(p) > 1 else None for p in prompts]
        if any(r is None for r in results):
            raise RequestError("input_ids: a one-token prompt cannot be scored prefill-only here; send at least two tokens (e.g. with the start token)")
        rows = [r.scores[0] for r in results]
    cached = sum(r.cached_tokens for r in results)
    replies = []
    for i, (ids, row) in enumerate(zip(prompts, rows)):
        meta = _meta(rid if len(prompts) == 1 else f"{rid}-{i}", len(ids), [], cached if i == 0 else 0, time.perf_counter() - started, 0)
        meta["output_token_logprobs"] = []
        meta["output_token_ids_logprobs"] = [[[lp, t, None] for lp, t in zip(row, token_ids)]]
        replies.append(generate_response([], "", meta))
    return replies


async def _prompt_logprobs(batcher: Batcher, prompts: list[list[int]], body: GenerateRequest, rid: str) -> list[dict[str, Any]]:
    """SGLang's answer to ``return_logprob`` + ``logprob_start_len`` (+ ``top_logprobs_num``)
    with ``max_new_tokens: 0``: ``input_token_logprobs`` as ``[logprob, token_id, None]`` per
    prompt position from the prompt's start (``None`` for position 0, which nothing
    predicts) and ``input_top_logprobs`` as lists of ``[logprob, token_id, None]``. The
    batch's prompts run through the engine as one job."""
    started = time.perf_counter()
    found = await batcher.submit("prompt_logprobs", {"prompts": prompts, "starts": body.starts, "top": body.top_logprobs_num})
    replies = []
    for i, (ids, start, result) in enumerate(zip(prompts, body.starts, found)):
        meta = _meta(f"{rid}-{i}" if len(prompts) > 1 else rid, len(ids), [], 0, time.perf_counter() - started, 0)
        meta["input_token_logprobs"] = [[lp, t, None] for lp, t in zip(result.token, ids[start:])]
        meta["input_top_logprobs"] = [None if row is None else [[lp, t, None] for lp, t in row] for row in result.top] if body.top_logprobs_num else []
        meta["output_token_logprobs"] = []
        replies.append(generate_response([], "", meta))
    return replies


def _meta(rid: str, prompt_tokens: int, output_ids: list[int], cached: int, latency: float, max_new_tokens: int) -> dict[str, Any]:
    finished = {"type": "length", "length": max_new_tokens} if len(output_ids) >= max_new_tokens else {"type": "stop"}
    return {"id": rid, "prompt_tokens": prompt_tokens, "completion_tokens": len(output_ids), "cached_tokens": cached,
            "e2e_latency": latency, "finish_reason": finished}  # fmt: skip


async def _stream(state: dict[str, Any], kwargs: dict[str, Any], body: GenerateRequest, rid: str) -> AsyncIterator[bytes]:
    """Server-sent events as SGLang sends them: one ``data:`` line per new token (cumulative
    text and ids), then ``data: [DONE]``. The tokens are produced on the engine's worker
    thread (in the continuous decode batch, beside the other generations) and handed over
    through a queue."""
    engine: Engine = state["engine"]
    batcher: Batcher = state["batcher"]
    tokens: queue.Queue = queue.Queue()
    started = time.perf_counter()
    if batcher.decoding is not None:
        try:
            await batcher.submit("generate_stream", {"request": kwargs, "sink": tokens})
        except Exception as exc:  # noqa: BLE001 - refused at join: reported as the only event
            tokens.put(exc)
    else:

        def produce() -> None:
            try:
                with batcher.lock:
                    for item in engine.generate_stream(**kwargs):
                        tokens.put(item)
            except Exception as exc:  # noqa: BLE001 - reported to the client as the last event
                tokens.put(exc)
            tokens.put(None)

        threading.Thread(target=produce, daemon=True).start()
    output: list[int] = []
    while True:
        item = await asyncio.to_thread(tokens.get)
        if item is None:
            break
        if isinstance(item, Exception):
            yield f"data: {json.dumps({'error': {'message': str(item)}})}\n\n".encode()
            break
        token, _logprob, _chosen, hit = item
        output.append(token)
        meta = _meta(rid, len(kwargs["ids"]), output, hit, time.perf_counter() - started, kwargs["max_new_tokens"])
        text = engine.tokenizer.decode(output, skip_special_tokens=True)
        yield f"data: {json.dumps(generate_response(list(output), text, meta))}\n\n".encode()
    yield b"data: [DONE]\n\n"


def free_port() -> int:
    """A TCP port on localhost nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def background_server(model_dir: Path, *, startup_timeout_s: float = 120.0, **app_options: Any):
    """The engine's real HTTP server in a thread of this process, on a free port; yields its URL
    and shuts it down (in-flight requests finish) on exit. For benchmarks and tests."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model_dir, **app_options), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"the local engine for {model_dir} did not start within {startup_timeout_s:g} s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def serve(
    model_dir: Path, *, host: str = "127.0.0.1", port: int = 30000, cache_tokens: int = 200_000, batch_window_ms: float = 0.0,
    threads: int | None = None, limits: ServeLimits | None = None,
) -> None:  # fmt: skip
    """Run the server until SIGINT/SIGTERM (uvicorn finishes in-flight requests first)."""
    import uvicorn

    app = create_app(model_dir, cache_tokens=cache_tokens, batch_window_ms=batch_window_ms, threads=threads, limits=limits)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
