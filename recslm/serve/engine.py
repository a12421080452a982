"""The local engine: a Hugging Face causal LM behind a radix prefix cache, on one worker.

It does the two things recslm's traffic needs, with SGLang's semantics:
- **score** (``/v1/score``): for a query (the member's prompt) and k items (candidates),
  the probabilities of ``label_token_ids`` after ``query + item``. The query's KV comes
  from the radix cache (prefilled once, the first time); the items of all requests in a
  batch then run in one forward, packed one row per request behind its query's KV with
  an attention mask that keeps items apart (see :meth:`Engine._items_logprobs`), so
  scores equal offline scores.
- **generate** (``/generate``): greedy or sampled continuation of a prompt, reusing the
  longest cached prefix, one token at a time (:meth:`Engine.generate`, one request alone); the
  server decodes concurrent requests together (``recslm.serve.decode``, continuous batching).

Text is tokenized the way recslm tokenizes offline: a query with the tokenizer's special
start, an item without (see :func:`recslm.data.tokenizer.encode_parts`); token ids are
taken as given. The engine is not thread-safe: the server feeds it from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache

from recslm.data.tokenizer import encode_candidate, encode_prefix, load_tokenizer
from recslm.errors import RecslmError
from recslm.models.compat import with_cache
from recslm.models.factory import load_model
from recslm.serve.limits import ServeLimits
from recslm.serve.radix import KV, RadixCache, kv_length

GREEDY_BELOW = 1e-6
"""Temperatures below this decode greedily, as SGLang does: dividing logits by a near-zero
temperature overflows to inf and the sampling distribution to NaN."""


class RequestError(RecslmError):
    """A request the engine cannot serve (too long, empty, unknown token): the client's fault, a 400."""


@dataclass
class PromptLogprobs:
    """Per prompt position: the prompt token's log-probability and the top (log-prob, id) pairs."""

    token: list[float | None]
    top: list[list[tuple[float, int]] | None]


@dataclass
class ScoreJob:
    query: list[int]
    items: list[list[int]]
    label_token_ids: list[int]
    apply_softmax: bool = False
    log: bool = False  # log-probabilities over the vocabulary (SGLang's prefill-only /generate) instead of probabilities


@dataclass
class ScoreResult:
    scores: list[list[float]]
    prompt_tokens: int
    cached_tokens: int


@dataclass
class GenerateResult:
    output_ids: list[int]
    text: str
    prompt_tokens: int
    cached_tokens: int
    output_token_logprobs: list[float] = field(default_factory=list)
    output_token_ids_logprobs: list[list[float]] = field(default_factory=list)
    first_token_s: float = 0.0


@dataclass
class EngineStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class Engine:
    def __init__(
        self, model_dir: Path, *, cache_tokens: int = 200_000, max_batch_rows: int = 256, threads: int | None = None, limits: ServeLimits | None = None,
    ):  # fmt: skip
        if threads:
            torch.set_num_threads(threads)
        self.model_dir = Path(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.model = load_model(self.model_dir).eval()
        self.decoder = self.model.get_decoder()
        self.head = self.model.get_output_embeddings()
        self.cache = RadixCache(cache_tokens)
        self.max_batch_rows = max_batch_rows
        self.limits = limits or ServeLimits()
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or 1 << 30
        self.vocab_size = int(self.head.weight.shape[0])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.stats = EngineStats()

    # ------------------------------------------------------------------ tokenization and checks
    def encode_query(self, query: str | list[int]) -> list[int]:
        return encode_prefix(self.tokenizer, query) if isinstance(query, str) else list(query)

    def encode_item(self, item: str | list[int]) -> list[int]:
        return encode_candidate(self.tokenizer, item) if isinstance(item, str) else list(item)

    def check_ids(self, ids: Sequence[int], what: str, extra: int = 0) -> None:
        if not ids:
            raise RequestError(f"{what} is empty")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise RequestError(f"{what}: token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        if len(ids) + extra > self.context_length:
            raise RequestError(f"{what}: {len(ids)} tokens (+{extra}) exceed the model's context length {self.context_length}")

    # ------------------------------------------------------------------ KV plumbing
    def _cache_of(self, rows: list[KV]) -> tuple[DynamicCache, torch.Tensor]:
        """A batched DynamicCache of per-row KVs, right-padded to the longest; and the row lengths."""
        lengths = torch.tensor([kv_length(kv) for kv in rows])
        width = int(lengths.max())
        cache = DynamicCache(config=self.model.config)
        for layer in range(len(rows[0])):
            keys, values = [], []
            for kv in rows:
                k, v = kv[layer]
                pad = width - k.shape[-2]
                keys.append(torch.nn.functional.pad(k, (0, 0, 0, pad)) if pad else k)
                values.append(torch.nn.functional.pad(v, (0, 0, 0, pad)) if pad else v)
            cache.update(torch.stack(keys), torch.stack(values), layer)
        return cache, lengths

    @staticmethod
    def _kv_of(cache: DynamicCache, row: int = 0) -> KV:
        return [(layer.keys[row], layer.values[row]) for layer in cache.layers]

    @torch.no_grad()
    def prefix(self, ids: list[int]) -> tuple[KV, int]:
        """KV of ``ids`` (from the cache as far as it goes, the rest prefilled and cached); and
        how many tokens came from the cache."""
        hit = self.cache.match(ids)
        self.stats.prompt_tokens += len(ids)
        self.stats.cached_tokens += hit.length
        if hit.length == len(ids):
            return hit.kv, hit.length
        if hit.length:
            cache, _ = self._cache_of([hit.kv])
        else:
            cache = DynamicCache(config=self.model.config)
        rest = torch.tensor([ids[hit.length :]])
        positions = torch.arange(hit.length, len(ids))[None, :]
        self.decoder(input_ids=rest, position_ids=positions, use_cache=True, **with_cache(self.decoder, cache))
        kv = self._kv_of(cache)
        self.cache.insert(ids, kv)
        return kv, hit.length

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(self, jobs: Sequence[ScoreJob]) -> list[ScoreResult]:
        """Score every job. Each job's items are packed into rows of at most
        ``limits.max_row_tokens`` tokens behind a copy of its query's KV, and rows into
        forwards of at most ``max_batch_rows`` items and ``limits.max_batch_tokens`` tokens,
        so memory stays bounded whatever the requests' sizes."""
        prefixes, cached = [], []
        for job in jobs:
            kv, hit = self.prefix(job.query)
            prefixes.append(kv)
            cached.append(hit)
        rows = [(j, row) for j, job in enumerate(jobs) for row in _pack(job.items, self.limits.max_row_tokens)]
        logprobs: list[torch.Tensor] = []
        chunk: list[tuple[int, list[list[int]]]] = []
        items = tokens = 0
        for j, row in rows:
            row_tokens = sum(map(len, row))
            if chunk and (items + len(row) > self.max_batch_rows or tokens + row_tokens > self.limits.max_batch_tokens):
                logprobs.append(self._items_logprobs([prefixes[c] for c, _ in chunk], [r for _, r in chunk]))
                chunk, items, tokens = [], 0, 0
            chunk.append((j, row))
            items, tokens = items + len(row), tokens + row_tokens
        if chunk:
            logprobs.append(self._items_logprobs([prefixes[c] for c, _ in chunk], [r for _, r in chunk]))
        all_logprobs = torch.cat(logprobs)
        results, cursor = [], 0
        for job, hit in zip(jobs, cached):
            block = all_logprobs[cursor : cursor + len(job.items)]
            cursor += len(job.items)
            label = block[:, job.label_token_ids]
            probs = label if job.log else torch.softmax(label, dim=-1) if job.apply_softmax else label.exp()
            results.append(ScoreResult(probs.tolist(), len(job.query) + sum(map(len, job.items)), hit))
            self.stats.requests += 1
        return results

    def _items_logprobs(self, prefixes: list[KV], items: list[list[list[int]]]) -> torch.Tensor:
        """Next-token log-probabilities after ``prefix + item`` for every item ([items, vocab]).

        One row per request: its prefix KV once, then all its items back to back, each at
        positions that continue the prefix. A 4-D attention mask lets every item token see
        the prefix and the earlier tokens of its own item only, so each item is computed
        exactly as if alone after the prefix, while the prefix KV is neither copied per
        item nor attended more than once per token.
        """
        cache, prefix_len = self._cache_of(prefixes)
        width = int(prefix_len.max())
        lengths = [sum(map(len, row)) for row in items]
        span = max(lengths)
        ids = torch.full((len(items), span), self.pad_id, dtype=torch.long)
        positions = torch.zeros(len(items), span, dtype=torch.long)
        owner = torch.full((len(items), span), -1, dtype=torch.long)  # which item a token belongs to (-1: padding)
        last: list[tuple[int, int]] = []
        for r, row in enumerate(items):
            at = 0
            for i, item in enumerate(row):
                n = len(item)
                ids[r, at : at + n] = torch.tensor(item)
                positions[r, at : at + n] = int(prefix_len[r]) + torch.arange(n)
                owner[r, at : at + n] = i
                last.append((r, at + n - 1))
                at += n
        causal = torch.ones(span, span, dtype=torch.bool).tril()
        same_item = (owner[:, :, None] == owner[:, None, :]) & (owner[:, :, None] >= 0)
        mask = torch.zeros(len(items), 1, span, width + span, dtype=torch.bool)
        mask[:, 0, :, :width] = (torch.arange(width)[None, None, :] < prefix_len[:, None, None]).expand(-1, span, -1)
        mask[:, 0, :, width:] = same_item & causal
        mask[:, 0, :, 0] |= owner < 0  # padding queries attend somewhere (no all-masked rows); their output is unused
        out = self.decoder(input_ids=ids, position_ids=positions, attention_mask=mask, use_cache=True, **with_cache(self.decoder, cache))
        rows, cols = zip(*last)
        hidden = out.last_hidden_state[torch.tensor(rows), torch.tensor(cols)]
        return torch.log_softmax(self.head(hidden).float(), dim=-1)

    # ------------------------------------------------------------------ prompt log-probabilities
    @torch.no_grad()
    def prompt_logprobs(self, prompts: list[list[int]], starts: list[int], top: int) -> list[PromptLogprobs]:
        """SGLang's prompt log-probabilities of each prompt from its position ``start`` on: for
        each position i, the log-probability of token i given the tokens before it, and (``top``
        > 0) the ``top`` most likely tokens there; position 0 has none (nothing precedes it).
        Over the tokenizer's tokens only: a padded output layer's extra rows are no token. The
        prompts run as one right-padded forward, and only the rows asked for go through the
        output layer.

        A distillation teacher served this way (``recslm.train.served_topk``) never sits on the
        students' GPUs."""
        for i, ids in enumerate(prompts):
            self.check_ids(ids, f"input_ids[{i}]")
        self.stats.requests += len(prompts)
        self.stats.prompt_tokens += sum(map(len, prompts))
        width = max(map(len, prompts))
        batch = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):
            batch[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), 1
        hidden = self.decoder(input_ids=batch, attention_mask=mask, use_cache=False).last_hidden_state
        vocab = min(len(self.tokenizer), self.vocab_size)
        results = []
        for i, (ids, start) in enumerate(zip(prompts, starts)):
            first = max(start, 1)
            rows = torch.log_softmax(self.head(hidden[i, first - 1 : len(ids) - 1]).float()[:, :vocab], dim=-1)  # row j predicts token first + j
            targets = torch.tensor(ids[first:])
            result = PromptLogprobs(token=[None] if start == 0 else [], top=[None] if start == 0 else [])
            result.token += rows.gather(1, targets[:, None])[:, 0].tolist()
            if top:
                values, index = rows.topk(min(top, vocab), dim=-1)
                result.top += [list(zip(v, t)) for v, t in zip(values.tolist(), index.tolist())]
            else:
                result.top += [None] * len(targets)
            results.append(result)
        return results

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_stream(
        self, ids: list[int], *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
        token_ids_logprob: list[int] | None = None, stop_token_ids: Sequence[int] = (),
    ) -> Iterator[tuple[int, float, list[float], int]]:  # fmt: skip
        """Yield (token id, its logprob, logprobs of ``token_ids_logprob``, cached prompt tokens) per new token."""
        self.check_ids(ids, "input_ids", extra=max_new_tokens)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        kv, hit = self.prefix(ids[:-1]) if len(ids) > 1 else ([], 0)
        cache = self._cache_of([kv])[0] if kv else DynamicCache(config=self.model.config)
        self.stats.requests += 1
        position, token = len(ids) - 1, ids[-1]
        for _ in range(max_new_tokens):
            out = self.decoder(input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[position]]), use_cache=True, **with_cache(self.decoder, cache))
            logprobs = torch.log_softmax(self.head(out.last_hidden_state[:, -1]).float(), dim=-1)[0]
            token = sample_token(logprobs, temperature, top_p, generator)
            yield token, float(logprobs[token]), [float(logprobs[t]) for t in token_ids_logprob or []], hit
            if token in stop_token_ids:
                return
            position += 1

    def generate(self, ids: list[int], **kwargs) -> GenerateResult:
        started = time.perf_counter()
        result = GenerateResult([], "", len(ids), 0)
        for token, logprob, chosen, hit in self.generate_stream(ids, **kwargs):
            if not result.output_ids:
                result.first_token_s = time.perf_counter() - started
            result.output_ids.append(token)
            result.output_token_logprobs.append(logprob)
            result.output_token_ids_logprobs.append(chosen)
            result.cached_tokens = hit
        result.text = self.tokenizer.decode(result.output_ids, skip_special_tokens=True)
        return result


def _pack(items: list[list[int]], row_tokens: int) -> list[list[list[int]]]:
    """Consecutive items grouped into rows of at most ``row_tokens`` tokens (an item longer
    than that gets a row of its own); item order is kept, so results concatenate back."""
    rows: list[list[list[int]]] = []
    size = 0
    for item in items:
        if not rows or size + len(item) > row_tokens:
            rows.append([])
            size = 0
        rows[-1].append(item)
        size += len(item)
    return rows


def sample_token(logprobs: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """The next token from one row's log-probabilities: greedy below GREEDY_BELOW, else sampled
    at ``temperature`` within the ``top_p`` nucleus (shared by one request alone and the decode batch)."""
    if temperature < GREEDY_BELOW:
        return int(torch.argmax(logprobs))
    probs = torch.softmax(logprobs / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=0) - sorted_probs < top_p
        keep[0] = True  # the most likely token always stays (a tiny top_p rounds to 0 in float32)
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
