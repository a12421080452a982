"""Continuous batching (recslm/serve/decode.py): requests decoded together, joining and leaving
at any step, give what each gives decoded alone."""

from __future__ import annotations

import json

import pytest
import torch

from recslm.models.factory import save_model
from recslm.serve.decode import ContinuousBatch, DecodeRequest
from recslm.serve.engine import Engine, RequestError
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("decode") / "model"
    torch.manual_seed(0)
    save_model(tiny_model(tokenizer), tokenizer, folder)
    return Engine(folder)


def _prompts(tokenizer) -> list[list[int]]:
    texts = ["Task: will the member like this movie?", "History: Film 3 (1995) | Drama | 5", "Member: likes Comedy", "x", "Movie: Title 12 | Horror\nAnswer:"]
    return [tokenizer(t)["input_ids"] for t in texts]


def test_requests_joining_at_different_steps_decode_as_they_would_alone(engine, tokenizer):
    prompts = _prompts(tokenizer)
    lengths = [6, 3, 9, 5, 7]
    alone = [engine.generate(ids, max_new_tokens=n, temperature=0.0) for ids, n in zip(prompts, lengths)]
    batch = ContinuousBatch(engine)
    done: dict[int, object] = {}
    streamed: dict[int, list[int]] = {i: [] for i in range(len(prompts))}

    def join(i: int) -> None:
        batch.join(
            DecodeRequest(prompts[i], max_new_tokens=lengths[i]),
            on_done=lambda result, i=i: done.__setitem__(i, result),
            on_token=lambda token, *_, i=i: streamed[i].append(token),
        )

    join(0)
    join(1)
    batch.step()
    batch.step()
    join(2)  # joins mid-way, with a longer prompt than the batch is wide
    batch.step()
    join(3)  # a one-token prompt: no KV of its own
    join(4)
    rows_seen = []
    while batch.active:
        rows_seen.append(batch.step())
    assert max(rows_seen) >= 3  # decoded together, not one after the other
    assert sorted(done) == list(range(len(prompts)))
    for i, result in done.items():
        assert result.output_ids == alone[i].output_ids, i
        assert streamed[i] == alone[i].output_ids
        assert result.output_token_logprobs == pytest.approx(alone[i].output_token_logprobs, abs=1e-4)
        assert result.text == alone[i].text
    assert batch.keys == [] and batch.valid.shape == (0, 0)  # nothing left behind


def test_stop_tokens_end_a_row_early_and_the_rest_go_on(engine, tokenizer):
    prompts = _prompts(tokenizer)
    first = engine.generate(prompts[0], max_new_tokens=8, temperature=0.0).output_ids
    stop = first[2]
    batch = ContinuousBatch(engine)
    done = {}
    batch.join(DecodeRequest(prompts[0], max_new_tokens=8, stop_token_ids=[stop]), on_done=lambda r: done.__setitem__("stop", r))
    batch.join(DecodeRequest(prompts[1], max_new_tokens=8), on_done=lambda r: done.__setitem__("long", r))
    while batch.active:
        batch.step()
    assert done["stop"].output_ids == first[: first.index(stop) + 1]
    assert done["long"].output_ids == engine.generate(prompts[1], max_new_tokens=8, temperature=0.0).output_ids


def test_seeded_sampling_is_reproducible_inside_a_batch(engine, tokenizer):
    prompts = _prompts(tokenizer)
    alone = engine.generate(prompts[2], max_new_tokens=6, temperature=1.0, seed=11).output_ids
    batch = ContinuousBatch(engine)
    done = {}
    batch.join(DecodeRequest(prompts[0], max_new_tokens=6, temperature=1.0, seed=3), on_done=lambda r: None)
    batch.join(DecodeRequest(prompts[2], max_new_tokens=6, temperature=1.0, seed=11), on_done=lambda r: done.__setitem__(0, r))
    while batch.active:
        batch.step()
    assert done[0].output_ids == alone


def test_a_request_the_model_cannot_take_is_refused_at_join(engine):
    batch = ContinuousBatch(engine)
    with pytest.raises(RequestError, match="outside the vocabulary"):
        batch.join(DecodeRequest([engine.vocab_size + 5], max_new_tokens=2), on_done=lambda r: None)
    assert not batch.active


def test_concurrent_generate_requests_share_decode_steps_through_the_server(engine, tokenizer):
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from recslm.serve.server import create_app

    prompts = _prompts(tokenizer)
    alone = [engine.generate(ids, max_new_tokens=12, temperature=0.0).output_ids for ids in prompts]
    with TestClient(create_app(engine.model_dir, batch_window_ms=50)) as client:
        body = lambda ids: {"input_ids": ids, "sampling_params": {"max_new_tokens": 12, "temperature": 0}}  # noqa: E731
        with ThreadPoolExecutor(len(prompts)) as pool:
            replies = list(pool.map(lambda ids: client.post("/generate", json=body(ids)).json(), prompts))
        assert [r["output_ids"] for r in replies] == alone
        metrics = client.get("/metrics_json").json()
        assert metrics["decode_rows_per_step"] > 1.5, metrics  # decoded side by side, not one after another
        batched = client.post("/generate", json={"input_ids": prompts[:3], "sampling_params": {"max_new_tokens": 12, "temperature": 0}}).json()
        assert [r["output_ids"] for r in batched] == alone[:3]
        events = [e.removeprefix("data: ") for e in client.post("/generate", json={**body(prompts[1]), "stream": True}).text.split("\n\n") if e]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["output_ids"] == alone[1] and len(events) == 13


def test_a_failing_decode_step_fails_its_requests_and_the_server_goes_on(engine, tokenizer, monkeypatch):
    from fastapi.testclient import TestClient

    from recslm.serve import decode
    from recslm.serve.server import create_app

    prompts = _prompts(tokenizer)
    real_step = decode.ContinuousBatch.step
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost mid-step")
        return real_step(self)

    monkeypatch.setattr(decode.ContinuousBatch, "step", flaky)
    with TestClient(create_app(engine.model_dir), raise_server_exceptions=False) as client:
        failed = client.post("/generate", json={"input_ids": prompts[0], "sampling_params": {"max_new_tokens": 4, "temperature": 0}})
        assert failed.status_code == 500 and "device lost mid-step" in failed.json()["error"]["message"]
        ok = client.post("/generate", json={"input_ids": prompts[0], "sampling_params": {"max_new_tokens": 4, "temperature": 0}})
        assert ok.status_code == 200 and ok.json()["output_ids"] == engine.generate(prompts[0], max_new_tokens=4, temperature=0.0).output_ids
