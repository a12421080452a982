"""The local engine over HTTP (FastAPI's TestClient runs the real app, lifespan included)."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from recslm.data.tokenizer import answer_token_ids
from recslm.evaluate.scoring import score_records
from recslm.models.factory import load_model, save_model
from recslm.models.prefix import make_groups
from recslm.serve.server import create_app
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("served")
    save_model(tiny_model(tokenizer, "llama", seed=5), tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir, cache_tokens=5_000, batch_window_ms=20)) as c:
        yield c


def test_health_and_model_info(client, model_dir):
    assert client.get("/health").status_code == 200
    assert client.get("/health_generate").status_code == 200
    info = client.get("/model_info").json()
    assert info["model_path"] == str(model_dir) and info["is_generation"] and info["context_length"] == 2048


def test_scores_equal_offline_scores_and_the_prefix_is_cached(client, model_dir, records, tokenizer):
    offline = score_records(load_model(model_dir), tokenizer, records).scores
    answers = answer_token_ids(tokenizer)
    served = [0.0] * len(records)
    for group in make_groups(records, tokenizer):
        body = {"query": group.prefix_ids, "items": group.candidate_ids, "label_token_ids": [answers[1], answers[0]], "apply_softmax": True}
        reply = client.post("/v1/score", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["object"] == "scoring"
        for index, (p_yes, p_no) in zip(group.record_index, reply.json()["scores"]):
            assert p_yes + p_no == pytest.approx(1.0, abs=1e-6)
            served[index] = p_yes
    assert max(abs(a - b) for a, b in zip(served, offline)) < 1e-4
    # the same member again: its whole query comes from the radix cache
    group = make_groups(records, tokenizer)[0]
    again = client.post("/v1/score", json={"query": group.prefix_ids, "items": group.candidate_ids, "label_token_ids": [answers[1]]}).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == len(group.prefix_ids)
    # without apply_softmax: the label's probability over the whole vocabulary (below 1)
    assert 0 < again["scores"][0][0] < 1


def test_text_is_tokenized_as_recslm_does_offline(client, records, tokenizer):
    answers = answer_token_ids(tokenizer)
    group = make_groups(records[:4], tokenizer)[0]
    rec = records[group.record_index[0]]
    by_text = client.post("/v1/score", json={"query": rec.prefix, "items": [rec.candidate], "label_token_ids": [answers[1], answers[0]], "apply_softmax": True}).json()
    by_ids = client.post("/v1/score", json={"query": group.prefix_ids, "items": [group.candidate_ids[0]], "label_token_ids": [answers[1], answers[0]], "apply_softmax": True}).json()
    assert torch.allclose(torch.tensor(by_text["scores"]), torch.tensor(by_ids["scores"]), atol=1e-6)


def test_generate_is_greedy_decoding_and_reports_cached_tokens(client, model_dir, tokenizer):
    ids = tokenizer.encode("member 3 liked Drama and Comedy", add_special_tokens=True)
    expected = load_model(model_dir).generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, min_new_tokens=6)[0, len(ids):].tolist()
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 6, "temperature": 0}, "return_logprob": True, "token_ids_logprob": [5, 7]}
    first = client.post("/generate", json=body).json()
    assert first["output_ids"] == expected
    meta = first["meta_info"]
    assert meta["completion_tokens"] == 6 and meta["finish_reason"]["type"] == "length" and meta["prompt_tokens"] == len(ids)
    assert [t for _, t, _ in meta["output_token_logprobs"]] == expected and all(lp <= 0 for lp, _, _ in meta["output_token_logprobs"])
    assert len(meta["output_token_ids_logprobs"]) == 6 and [t for _, t, _ in meta["output_token_ids_logprobs"][0]] == [5, 7]
    second = client.post("/generate", json=body).json()
    assert second["output_ids"] == expected and second["meta_info"]["cached_tokens"] == len(ids) - 1


def test_prefill_only_generate_scores_as_sglang_does_and_equals_offline(client, model_dir, records, tokenizer):
    """SGLang's scoring request (/generate, max_new_tokens 0, token_ids_logprob): how ranking
    traffic goes through the router. A member's candidates as one batch; log-probabilities at
    the position after each prompt, equal to /v1/score and to the offline scores."""
    offline = score_records(load_model(model_dir), tokenizer, records).scores
    answers = answer_token_ids(tokenizer)
    labels = [answers[1], answers[0]]
    for group in make_groups(records, tokenizer)[:6]:
        prompts = [group.prefix_ids + c for c in group.candidate_ids]
        body = {"input_ids": prompts, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "token_ids_logprob": labels, "logprob_start_len": -1}
        reply = client.post("/generate", json=body)
        assert reply.status_code == 200, reply.text
        results = reply.json()
        assert isinstance(results, list) and len(results) == len(prompts)
        for index, result in zip(group.record_index, results):
            (row,) = result["meta_info"]["output_token_ids_logprobs"]
            assert [t for _, t, _ in row] == labels and result["output_ids"] == [] and result["meta_info"]["completion_tokens"] == 0
            yes, no = (lp for lp, _, _ in row)
            assert abs(torch.softmax(torch.tensor([yes, no]), 0)[0].item() - offline[index]) < 1e-4
    single = client.post("/generate", json={**body, "input_ids": prompts[0]}).json()
    assert isinstance(single, dict) and len(single["meta_info"]["output_token_ids_logprobs"]) == 1
    scored = client.post("/v1/score", json={"query": group.prefix_ids, "items": [group.candidate_ids[0]], "label_token_ids": labels}).json()["scores"][0]
    assert [math.exp(lp) for lp, _, _ in single["meta_info"]["output_token_ids_logprobs"][0]] == pytest.approx(scored, abs=1e-6)


def test_prompt_logprobs_are_sglangs_and_the_served_teachers_topk_equals_the_in_process_one(client, model_dir, records, tokenizer):
    """SGLang's prompt log-probabilities (return_logprob, logprob_start_len, top_logprobs_num,
    max_new_tokens 0): entry i is token i's log-probability given the tokens before it, None
    at position 0; the top-k lists are the model's. A distillation teacher served this way
    gives the same top-k targets as the teacher run in-process (values to 1e-4 before the
    store's float16, the same ids but where two values tie within that)."""
    from recslm.train.served_topk import served_teacher_topk
    from recslm.train.teacher_topk import compute_teacher_topk

    model = load_model(model_dir).eval()
    ids = make_groups(records, tokenizer)[0].prefix_ids[:12]
    reply = client.post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": 3})
    assert reply.status_code == 200, reply.text
    meta = reply.json()["meta_info"]
    assert meta["input_token_logprobs"][0] == [None, ids[0], None] and meta["input_top_logprobs"][0] is None
    with torch.no_grad():
        expected = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    for i in range(1, len(ids)):
        lp, token, _ = meta["input_token_logprobs"][i]
        assert token == ids[i] and lp == pytest.approx(expected[i - 1, ids[i]].item(), abs=1e-4)
        assert [t for _, t, _ in meta["input_top_logprobs"][i]] == expected[i - 1].topk(3).indices.tolist()
    later = client.post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 5}).json()["meta_info"]
    assert [t for _, t, _ in later["input_token_logprobs"]] == ids[5:] and later["input_top_logprobs"] == []

    groups = make_groups(records, tokenizer)[:5]
    local = compute_teacher_topk(model, groups, tokenizer.pad_token_id, k=8, vocab_size=len(tokenizer))
    served = served_teacher_topk("http://testserver", groups, 8, answer_token_ids(tokenizer)[1], client=client)
    assert served.k == local.k and served.digest == local.digest
    for name, tensor in local.tensors.items():
        other = served.tensors[name]
        assert other.shape == tensor.shape and other.dtype == tensor.dtype, name
        if name.endswith("_logprobs"):
            assert torch.allclose(other.float(), tensor.float(), atol=2e-3, rtol=1e-3), name  # both float16 of values equal to 1e-4
        elif name.endswith("_ids"):
            values = local.tensors[name.replace("_ids", "_logprobs")].float()
            tied = torch.zeros_like(values, dtype=torch.bool)
            tied[:, 1:] |= (values[:, 1:] - values[:, :-1]).abs() < 2e-3
            tied[:, :-1] |= tied[:, 1:].clone()
            assert torch.equal(other[~tied], tensor[~tied]), name
        else:
            assert torch.equal(other, tensor), name


@pytest.mark.parametrize(
    "body,reason",
    [
        ({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 0}}, "needs token_ids_logprob"),
        ({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 0}, "token_ids_logprob": [3], "stream": True}, "cannot stream"),
        ({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 4}, "return_logprob": True, "logprob_start_len": 0}, "served with max_new_tokens 0"),
        ({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 2}, "logprob_start_len: 2 is not a position of input_ids[0]"),
        ({"input_ids": [], "sampling_params": {"max_new_tokens": 0}, "token_ids_logprob": [3]}, "input_ids is empty"),
        ({"input_ids": [[1, 2], []], "sampling_params": {"max_new_tokens": 0}, "token_ids_logprob": [3]}, "input_ids[1] is empty"),
        ({"text": [], "sampling_params": {"max_new_tokens": 0}, "token_ids_logprob": [3]}, "batch of prompts is empty"),
    ],
)
def test_bad_prefill_only_requests_are_a_400(client, body, reason):
    reply = client.post("/generate", json=body)
    assert reply.status_code == 400 and reason in reply.json()["error"]["message"], reply.text


def test_streaming_sends_one_event_per_token_then_done(client, tokenizer):
    ids = tokenizer.encode("member 9 liked Horror", add_special_tokens=True)
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 4, "temperature": 0}}
    plain = client.post("/generate", json=body).json()
    with client.stream("POST", "/generate", json={**body, "stream": True}) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]" and len(lines) == 5
    events = [json.loads(line[5:]) for line in lines[:-1]]
    assert [len(e["output_ids"]) for e in events] == [1, 2, 3, 4]
    assert events[-1]["output_ids"] == plain["output_ids"]


@pytest.mark.parametrize(
    "path,body,reason",
    [
        ("/generate", {"sampling_params": {"max_new_tokens": 2}}, "exactly one of text or input_ids"),
        ("/generate", {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": -1}}, "max_new_tokens"),
        ("/generate", {"input_ids": [1] * 2040, "sampling_params": {"max_new_tokens": 20}}, "exceed the model's context length 2048"),
        ("/generate", {"input_ids": [1, 10**7]}, "outside the vocabulary"),
        ("/v1/score", {"query": [1, 2], "items": [], "label_token_ids": [3]}, "items is empty"),
        ("/v1/score", {"query": [1, 2], "items": [[3]], "label_token_ids": []}, "label_token_ids"),
        ("/v1/score", {"query": [], "items": [[3]], "label_token_ids": [4]}, "query is empty"),
        ("/v1/score", "not json at all", "invalid request"),
    ],
)
def test_bad_requests_get_a_400_with_the_reason_and_the_server_stays_up(client, path, body, reason):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) else {"json": body}
    reply = client.post(path, **kwargs)
    assert reply.status_code == 400, reply.text
    assert reason in reply.json()["error"]["message"]
    assert client.get("/health").status_code == 200


def test_requests_arriving_together_are_batched(client, records, tokenizer):
    answers = answer_token_ids(tokenizer)
    groups = make_groups(records, tokenizer)
    before = client.get("/metrics_json").json()
    bodies = [{"query": g.prefix_ids, "items": g.candidate_ids, "label_token_ids": [answers[1], answers[0]], "apply_softmax": True} for g in groups]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda b: client.post("/v1/score", json=b).json()["scores"], bodies))
    after = client.get("/metrics_json").json()
    assert after["batched_requests"] - before["batched_requests"] == len(bodies)
    assert after["batches"] - before["batches"] < len(bodies)  # some went through in one batch
    alone = [client.post("/v1/score", json=b).json()["scores"] for b in bodies[:3]]
    assert torch.allclose(torch.tensor(together[:3]), torch.tensor(alone), atol=1e-5)


def test_prefix_cache_budget_evicts_old_members_through_the_api(model_dir, records, tokenizer):
    answers = answer_token_ids(tokenizer)
    groups = make_groups(records, tokenizer)
    budget = len(groups[0].prefix_ids) * 2  # room for about two members' prompts
    with TestClient(create_app(model_dir, cache_tokens=budget)) as small:
        body = lambda g: {"query": g.prefix_ids, "items": g.candidate_ids, "label_token_ids": [answers[1], answers[0]], "apply_softmax": True}  # noqa: E731
        first = small.post("/v1/score", json=body(groups[0])).json()
        for g in groups[1:6]:
            small.post("/v1/score", json=body(g))
        stats = small.get("/metrics_json").json()
        assert stats["evicted_tokens"] > 0 and stats["cached_tokens_in_tree"] <= budget
        again = small.post("/v1/score", json=body(groups[0])).json()
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] < len(groups[0].prefix_ids)  # member 0 was evicted
        assert torch.allclose(torch.tensor(again["scores"]), torch.tensor(first["scores"]), atol=1e-6)  # and recomputed exactly
