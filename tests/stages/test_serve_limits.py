"""The local engine under hostile and careless requests: bounded, isolated, and every bad input a 4xx.

A bounded fuzz suite on localhost (FastAPI's TestClient runs the real app): each case below
was a 500, a memory spike or a whole failed batch before the serving limits existed.
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from recslm.data.tokenizer import answer_token_ids
from recslm.evaluate.scoring import score_records
from recslm.models.factory import load_model, save_model
from recslm.models.prefix import make_groups
from recslm.serve.engine import Engine, _pack
from recslm.serve.limits import ServeLimits
from recslm.serve.server import create_app
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("served-limits")
    save_model(tiny_model(tokenizer, "llama", seed=9), tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir, cache_tokens=5_000, batch_window_ms=30)) as c:
        yield c


@pytest.fixture(scope="module")
def labels(tokenizer):
    answers = answer_token_ids(tokenizer)
    return [answers[1], answers[0]]


def _body(group, labels):
    return {"query": group.prefix_ids, "items": group.candidate_ids, "label_token_ids": labels, "apply_softmax": True}


def test_ten_thousand_items_are_refused_naming_the_limit(client):
    body = {"query": "Task: a\n", "items": ["Movie: x y z\nAnswer:"] * 10_000, "label_token_ids": [3]}
    reply = client.post("/v1/score", json=body)
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert "max_items" in message and "10,000" in message and "--max-items" in message
    assert client.get("/health").status_code == 200


def test_a_two_megabyte_body_is_refused_by_default_without_stalling_health(client):
    started = time.perf_counter()
    reply = client.post("/generate", json={"text": "word " * 400_000})
    assert reply.status_code == 413 and "max_body_bytes of 1,048,576" in reply.json()["error"]["message"]
    assert time.perf_counter() - started < 1.0 and client.get("/health").status_code == 200


def test_a_body_over_the_limit_gets_a_413_before_it_is_parsed(model_dir):
    with TestClient(create_app(model_dir, limits=ServeLimits(max_body_bytes=2_000))) as small:
        reply = small.post("/generate", json={"text": "x " * 2_000})
        assert reply.status_code == 413 and "max_body_bytes" in reply.json()["error"]["message"]
        # without a Content-Length header (chunked): counted as it arrives and cut at the limit
        chunks = (b'{"text": "' + b"y" * 1_000, b"y" * 1_000, b"y" * 1_000 + b'"}')
        reply = small.post("/generate", content=iter(chunks), headers={"content-type": "application/json"})
        assert reply.status_code == 413 and "max_body_bytes" in reply.json()["error"]["message"]
        assert small.post("/generate", json={"text": "short", "sampling_params": {"max_new_tokens": 1}}).status_code == 200


def test_request_tokens_are_capped(model_dir, labels):
    with TestClient(create_app(model_dir, limits=ServeLimits(max_request_tokens=50))) as small:
        reply = small.post("/v1/score", json={"query": [5] * 30, "items": [[6] * 15, [7] * 15], "label_token_ids": labels})
        assert reply.status_code == 400 and "max_request_tokens" in reply.json()["error"]["message"]
        reply = small.post("/generate", json={"input_ids": [5] * 30, "sampling_params": {"max_new_tokens": 30}})
        assert reply.status_code == 400 and "prompts + max_new_tokens" in reply.json()["error"]["message"]


def test_items_are_split_into_bounded_rows_and_forwards_and_scores_stay_exact(model_dir, records, tokenizer, labels, monkeypatch):
    offline = score_records(load_model(model_dir), tokenizer, records).scores
    limits = ServeLimits(max_row_tokens=40, max_batch_tokens=100)
    forwards: list[list[int]] = []
    original = Engine._items_logprobs

    def recorded(self, prefixes, items):
        forwards.append([sum(map(len, row)) for row in items])
        return original(self, prefixes, items)

    monkeypatch.setattr(Engine, "_items_logprobs", recorded)
    groups = make_groups(records, tokenizer)
    longest_item = max(len(c) for g in groups for c in g.candidate_ids)
    served = [0.0] * len(records)
    with TestClient(create_app(model_dir, limits=limits)) as small:
        for group in groups:
            reply = small.post("/v1/score", json=_body(group, labels))
            assert reply.status_code == 200, reply.text
            for index, (p_yes, _) in zip(group.record_index, reply.json()["scores"]):
                served[index] = p_yes
    assert max(abs(a - b) for a, b in zip(served, offline)) < 1e-4
    assert any(len(rows) > 1 for rows in forwards)  # some requests were split over several rows
    assert all(t <= max(40, longest_item) for rows in forwards for t in rows)
    assert all(sum(rows) <= max(100, longest_item) for rows in forwards)


def test_pack_keeps_order_and_bounds_rows():
    items = [[1] * n for n in (3, 4, 10, 1, 1, 2)]
    rows = _pack(items, 5)
    assert [item for row in rows for item in row] == items
    assert [sum(map(len, row)) for row in rows] == [3, 4, 10, 4]


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/score", {"query": "a \ud800", "items": ["b"], "label_token_ids": [3]}),
        ("/v1/score", {"query": "a", "items": ["ok", "b \udfff"], "label_token_ids": [3]}),
        ("/v1/score", {"query": [1, 2], "items": [[3]], "label_token_ids": [3], "model": "m\ud800"}),
        ("/generate", {"text": "x \ud800 y"}),
        ("/generate", {"input_ids": [1, 2], "rid": "\udc00"}),
    ],
)
def test_lone_surrogates_are_a_400(client, path, body):
    reply = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert "lone surrogate" in reply.json()["error"]["message"]


@pytest.mark.parametrize("params", [{"temperature": 1e-300}, {"top_p": 1e-300, "temperature": 1.0}, {"temperature": 1e-300, "top_p": 1e-300}])
def test_vanishing_temperature_or_top_p_decode_greedily(client, tokenizer, params):
    ids = tokenizer.encode("member 3 liked Drama", add_special_tokens=True)
    greedy = client.post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 4, "temperature": 0}}).json()["output_ids"]
    reply = client.post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 4, "sampling_seed": 1, **params}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["output_ids"] == greedy


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("seed", [2**70, -(2**64), -1])
def test_seeds_torch_cannot_take_are_a_400_even_when_streaming(client, seed, stream):
    reply = client.post("/generate", json={"input_ids": [1, 2], "stream": stream, "sampling_params": {"max_new_tokens": 2, "sampling_seed": seed}})
    assert reply.status_code == 400 and "sampling_params.sampling_seed" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    "raw,reason",
    [
        ('{"input_ids": [1, 2], "sampling_params": {"temperature": Infinity}}', "finite"),
        ('{"input_ids": [1, 2], "sampling_params": {"top_p": NaN}}', "finite"),
        ('{"input_ids": [' + "9" * 5000 + "]}", "invalid request"),
        ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid request"),
        ("\xff\xfe not utf-8", "invalid request"),
    ],
)
def test_malformed_bodies_are_a_400(client, raw, reason):
    content = raw.encode("latin-1") if raw.startswith("\xff") else raw.encode()
    reply = client.post("/generate", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reason in reply.json()["error"]["message"]


def test_a_request_that_fails_in_the_engine_does_not_fail_its_batch(model_dir, records, tokenizer, labels, monkeypatch):
    poison = 7  # a token id: any request whose items contain it fails inside the engine
    original = Engine._items_logprobs

    def fragile(self, prefixes, items):
        if any(poison in item for row in items for item in row):
            raise RuntimeError("simulated kernel failure")
        return original(self, prefixes, items)

    monkeypatch.setattr(Engine, "_items_logprobs", fragile)
    groups = [g for g in make_groups(records, tokenizer) if all(poison not in c for c in g.candidate_ids)][:8]
    bodies = [_body(g, labels) for g in groups]
    bad = {"query": groups[0].prefix_ids, "items": [[poison, poison]], "label_token_ids": labels}
    with TestClient(create_app(model_dir, batch_window_ms=200), raise_server_exceptions=False) as c:
        alone = [c.post("/v1/score", json=b).json()["scores"] for b in bodies]
        before = c.get("/metrics_json").json()["batches"]
        with ThreadPoolExecutor(9) as pool:
            replies = list(pool.map(lambda b: c.post("/v1/score", json=b), [bad, *bodies]))
        batches = c.get("/metrics_json").json()["batches"] - before
    assert batches < 9  # the bad request shared a batch with good ones
    assert replies[0].status_code == 500 and "simulated kernel failure" in replies[0].json()["error"]["message"]
    for reply, expected in zip(replies[1:], alone):
        assert reply.status_code == 200
        assert torch.allclose(torch.tensor(reply.json()["scores"]), torch.tensor(expected), atol=1e-6)


def test_a_burst_of_mixed_good_and_bad_requests_keeps_the_good_ones_exact(client, records, tokenizer, labels):
    """40 concurrent requests, half of them bad in ten different ways: every bad one gets a 4xx,
    every good one its exact score, nothing a 500, and the server stays up."""
    groups = make_groups(records, tokenizer)[:20]
    good = [("/v1/score", _body(g, labels)) for g in groups]
    expected = [client.post(path, json=body).json()["scores"] for path, body in good]
    bad_bodies = [
        ("/v1/score", {"query": [1, 2], "items": [], "label_token_ids": [3]}),
        ("/v1/score", {"query": [1, 10**9], "items": [[3]], "label_token_ids": [3]}),
        ("/v1/score", {"query": "a \ud800", "items": ["b"], "label_token_ids": [3]}),
        ("/v1/score", {"query": [1], "items": [[2]] * 5_000, "label_token_ids": [3]}),
        ("/v1/score", {"query": [1], "items": [[2]], "label_token_ids": []}),
        ("/generate", {"input_ids": [1] * 3_000}),
        ("/generate", {"input_ids": [1, 2], "sampling_params": {"sampling_seed": 2**70}}),
        ("/generate", {"text": "x", "input_ids": [1]}),
        ("/generate", {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": -1}}),
        ("/generate", {"input_ids": [1, 2], "token_ids_logprob": [10**6]}),
    ]
    bad = bad_bodies * 2
    mixed = [(True, i, req) for i, req in enumerate(good)] + [(False, i, req) for i, req in enumerate(bad)]
    random.Random(0).shuffle(mixed)

    def send(entry):
        ok, index, (path, body) = entry
        raw = json.dumps(body)  # surrogates travel as JSON escapes, as a client would send them
        return ok, index, client.post(path, content=raw, headers={"content-type": "application/json"})

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, mixed))
    for ok, index, reply in results:
        if ok:
            assert reply.status_code == 200
            assert torch.allclose(torch.tensor(reply.json()["scores"]), torch.tensor(expected[index]), atol=1e-5)
        else:
            assert 400 <= reply.status_code < 500, (bad[index], reply.text)
    assert client.get("/health").status_code == 200


def test_a_deploy_target_passes_the_serve_configs_limits_to_its_engines(model_dir, tmp_path):
    """serve.max_items (and the other limits) reach the engines a deploy starts, as flags."""
    import httpx

    from recslm.config import ServeConfig
    from recslm.serve.limits import limits_of
    from recslm.serve.release import target_for

    target = target_for(ServeConfig(max_items=2), tmp_path / "state")
    release = target.start("1", str(model_dir))
    try:
        target.wait_ready(release, 120)
        reply = httpx.post(f"{release.endpoint}/v1/score", json={"query": [1, 2], "items": [[3], [4], [5]], "label_token_ids": [3]}, timeout=30)
        assert reply.status_code == 400 and "max_items of 2" in reply.json()["error"]["message"]
        assert limits_of(ServeConfig()) == ServeLimits()  # the config's defaults are the engine's
    finally:
        target.stop(release)
