"""The teacher's top-k from a server: for teachers too large to sit beside the students.

The teacher runs on its own GPUs behind SGLang (or ``recslm serve``); the teacher-logits
stage asks it, group by group, for the top-k log-probabilities at every prompt position with
SGLang's own fields (``/generate`` with ``max_new_tokens: 0``, ``return_logprob``,
``logprob_start_len``, ``top_logprobs_num``) and stores them exactly as the in-process
teacher would (:func:`recslm.train.teacher_topk.compute_teacher_topk`), so distillation
cannot tell the difference.

SGLang's ``input_top_logprobs[i]`` is the distribution at position ``i - 1`` (the one that
predicts token ``i``). Each candidate's prompt is sent with one extra token (the answer
token) appended, so that its last entry is the distribution after the candidate: the answer
row. Rows: the prefix positions once per group (from the first candidate's prompt), each
candidate's own positions but its last, and its answer position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import torch

from recslm.errors import TransientError
from recslm.models.prefix import Group
from recslm.train.teacher_topk import TopkStore, assemble


def _rows(top: list[Any], first: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int32, log-probs float16) of the distributions at positions first..last-1
    (``input_top_logprobs`` entries first+1..last), each [[logprob, id, text], ...]."""
    entries = top[first + 1 : last + 1]
    ids = torch.tensor([[int(t) for _, t, *_ in row] for row in entries], dtype=torch.int32)
    lps = torch.tensor([[float(lp) for lp, *_ in row] for row in entries], dtype=torch.float32)
    return ids, lps.to(torch.float16)


def served_teacher_topk(
    endpoint: str,
    groups: Sequence[Group],
    k: int,
    answer_token_id: int,
    *,
    timeout_s: float = 600.0,
    on_groups: Callable[[int], None] | None = None,
    client: httpx.Client | None = None,
) -> TopkStore:
    """The teacher's top-k over ``groups``, from the server at ``endpoint`` (or through
    ``client``, an httpx client already bound to it)."""
    per_group: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    with contextlib.nullcontext(client) if client is not None else httpx.Client(base_url=endpoint, timeout=timeout_s) as http:  # a given client stays open
        for index, group in enumerate(groups):
            prefix = list(group.prefix_ids)
            prompts = [prefix + list(c) + [answer_token_id] for c in group.candidate_ids]
            p = len(prefix)
            # the prefix's positions once (first prompt); the others from their own tokens on
            starts = [0] + [p] * (len(prompts) - 1)
            body = {"input_ids": prompts, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": starts, "top_logprobs_num": k}
            try:
                reply = http.post("/generate", json=body)
            except httpx.HTTPError as exc:
                raise TransientError(f"teacher server {endpoint}: {exc}") from exc
            if reply.status_code >= 500:
                raise TransientError(f"teacher server {endpoint}/generate answered HTTP {reply.status_code}: {reply.text[:300]}")
            if reply.status_code != 200:
                raise ValueError(f"teacher server {endpoint}/generate refused the request: HTTP {reply.status_code}: {reply.text[:300]}")
            # input_top_logprobs from each prompt's start: pad the front back to prompt positions
            tops = [[None] * start + r["meta_info"]["input_top_logprobs"] for start, r in zip(starts, reply.json())]
            suffix = [_rows(top, p, len(prompt) - 2) for top, prompt in zip(tops, prompts)]  # candidate positions but the last
            answer = [_rows(top, len(prompt) - 2, len(prompt) - 1) for top, prompt in zip(tops, prompts)]
            per_group[index] = {
                "prefix": _rows(tops[0], 0, p),
                "suffix": (torch.cat([s[0] for s in suffix]), torch.cat([s[1] for s in suffix])),
                "answer": (torch.cat([a[0] for a in answer]), torch.cat([a[1] for a in answer])),
            }
            if on_groups is not None:
                on_groups(1)
    return assemble(per_group, groups, k)
