"""Continuous batching for ``/generate``: every active request advances one token per step,
in one forward, and a new request joins at the next step instead of waiting for the others.

One decode step of a small model is mostly fixed cost (kernel launches, Python, reading
the weights), so decoding 8 requests together costs little more than decoding one: the
gain is in throughput under concurrency, which is what generative traffic needs.

How the rows share one batched KV cache ([rows, heads, columns, head_dim] per layer):
- a request joins with its prompt's KV (from the engine's radix cache, prefilled once),
  right-padded to the batch's current width, or the batch is widened to it;
- each step appends one column: every active row's new token sits in it;
- a per-row validity mask over the columns says which columns are the row's (its prompt,
  then the columns of the steps since it joined), passed as the 4-D attention mask; each
  row keeps its own positions, so RoPE sees the same positions as a request decoded alone;
- finished rows are dropped, and columns no remaining row uses are dropped with them.

Outputs equal decoding each request alone up to floating-point rounding (the padded
columns are masked out exactly); ``tests/stages/test_serve_engine.py`` checks greedy
outputs against :meth:`recslm.serve.engine.Engine.generate`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from recslm.models.compat import with_cache
from recslm.serve.engine import Engine, GenerateResult, sample_token
from recslm.serve.radix import kv_length

TokenFn = Callable[[int, float, list[float], int], None]
DoneFn = Callable[[GenerateResult], None]
ErrorFn = Callable[[BaseException], None]


@dataclass
class DecodeRequest:
    """One ``/generate`` request's decoding parameters (SGLang's sampling fields)."""

    ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    token_ids_logprob: list[int] | None = None
    stop_token_ids: Sequence[int] = ()


@dataclass
class _Row:
    request: DecodeRequest
    on_done: DoneFn
    on_token: TokenFn | None
    on_error: ErrorFn | None
    result: GenerateResult
    generator: torch.Generator | None
    token: int  # the next input token
    position: int  # its position
    started: float = field(default_factory=time.perf_counter)


class ContinuousBatch:
    """The active ``/generate`` requests of one engine, decoded together (see the module docstring).

    Not thread-safe, like the engine: the server calls :meth:`join` and :meth:`step` from its
    worker thread, under the engine's lock.
    """

    def __init__(self, engine: Engine, max_rows: int | None = None):
        self.engine = engine
        self.max_rows = max_rows or engine.max_batch_rows
        self.rows: list[_Row] = []
        self.waiting: deque[_Row] = deque()
        self.keys: list[torch.Tensor] = []  # per layer [rows, kv_heads, columns, head_dim]
        self.values: list[torch.Tensor] = []
        self.valid = torch.zeros(0, 0, dtype=torch.bool)  # [rows, columns]: the columns each row attends to
        self.steps = 0
        self.row_steps = 0  # tokens produced (rows summed over steps): rows_per_step = row_steps / steps

    @property
    def active(self) -> bool:
        return bool(self.rows or self.waiting)

    def join(self, request: DecodeRequest, on_done: DoneFn, on_token: TokenFn | None = None, on_error: ErrorFn | None = None) -> None:
        """Queue ``request``; it enters the batch at the next step there is room. ``on_token``
        gets each new token as it is decoded, ``on_done`` the whole result, ``on_error`` what a
        failed step raised (:meth:`fail_all`). Raises :class:`recslm.serve.engine.RequestError`
        at once for ids the model cannot take."""
        self.engine.check_ids(request.ids, "input_ids", extra=request.max_new_tokens)
        generator = torch.Generator().manual_seed(request.seed) if request.seed is not None else None
        result = GenerateResult([], "", len(request.ids), 0)
        self.waiting.append(_Row(request, on_done, on_token, on_error, result, generator, request.ids[-1], len(request.ids) - 1))

    def fail_all(self, error: BaseException) -> int:
        """Drop every request after a step failed, telling each the error; the batch starts
        empty again (the server stays up). Returns how many were dropped."""
        dropped = self.rows + list(self.waiting)
        self.rows, self.waiting = [], deque()
        self.keys, self.values, self.valid = [], [], torch.zeros(0, 0, dtype=torch.bool)
        for row in dropped:
            if row.on_error is not None:
                row.on_error(error)
        return len(dropped)

    # ------------------------------------------------------------------ admitting rows
    def _admit(self) -> None:
        while self.waiting and len(self.rows) < self.max_rows:
            row = self.waiting.popleft()
            ids = row.request.ids
            kv, hit = self.engine.prefix(ids[:-1]) if len(ids) > 1 else ([], 0)
            row.result.cached_tokens = hit
            self.engine.stats.requests += 1
            self._add_row(kv)
            self.rows.append(row)

    def _add_row(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append the prompt KV ``kv`` (per layer [kv_heads, tokens, head_dim]) as a new row."""
        length = kv_length(kv) if kv else 0
        if not self.keys:  # the first row: the batch takes its shapes
            layers = self.engine.model.config.num_hidden_layers
            shape = self._empty_shape()
            self.keys = [kv[layer][0][None] if kv else torch.zeros(1, *shape) for layer in range(layers)]
            self.values = [kv[layer][1][None] if kv else torch.zeros(1, *shape) for layer in range(layers)]
            self.valid = torch.ones(1, length, dtype=torch.bool)
            return
        width = self.valid.shape[1]
        if length > width:  # widen the batch: the new columns are nobody else's
            grow = length - width
            self.keys = [torch.nn.functional.pad(k, (0, 0, 0, grow)) for k in self.keys]
            self.values = [torch.nn.functional.pad(v, (0, 0, 0, grow)) for v in self.values]
            self.valid = torch.nn.functional.pad(self.valid, (0, grow))
            width = length
        mask = torch.zeros(1, width, dtype=torch.bool)
        mask[0, :length] = True
        for layer in range(len(self.keys)):
            k, v = (kv[layer][0], kv[layer][1]) if kv else (self.keys[layer].new_zeros(self.keys[layer].shape[1:]),) * 2
            pad = width - k.shape[-2]
            self.keys[layer] = torch.cat([self.keys[layer], torch.nn.functional.pad(k, (0, 0, 0, pad))[None]])
            self.values[layer] = torch.cat([self.values[layer], torch.nn.functional.pad(v, (0, 0, 0, pad))[None]])
        self.valid = torch.cat([self.valid, mask])

    def _empty_shape(self) -> tuple[int, int, int]:
        config = self.engine.model.config
        heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        return heads, 0, head_dim

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(self) -> int:
        """Admit waiting requests, advance every row by one token, finish the rows that are done.
        Returns how many rows decoded."""
        self._admit()
        if not self.rows:
            return 0
        engine = self.engine
        cache = DynamicCache(config=engine.model.config)
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            cache.update(k, v, layer)
        n = len(self.rows)
        mask = torch.cat([self.valid, torch.ones(n, 1, dtype=torch.bool)], dim=1)[:, None, None, :]
        out = engine.decoder(
            input_ids=torch.tensor([[r.token] for r in self.rows]),
            position_ids=torch.tensor([[r.position] for r in self.rows]),
            attention_mask=mask,
            use_cache=True,
            **with_cache(engine.decoder, cache),
        )
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        self.valid = mask[:, 0, 0, :]
        logprobs = torch.log_softmax(engine.head(out.last_hidden_state[:, -1]).float(), dim=-1)
        finished: list[int] = []
        for i, row in enumerate(self.rows):
            token = sample_token(logprobs[i], row.request.temperature, row.request.top_p, row.generator)
            chosen = [float(logprobs[i, t]) for t in row.request.token_ids_logprob or []]
            result = row.result
            if not result.output_ids:
                result.first_token_s = time.perf_counter() - row.started
            result.output_ids.append(token)
            result.output_token_logprobs.append(float(logprobs[i, token]))
            result.output_token_ids_logprobs.append(chosen)
            if row.on_token is not None:
                row.on_token(token, float(logprobs[i, token]), chosen, result.cached_tokens)
            row.token, row.position = token, row.position + 1
            if len(result.output_ids) >= row.request.max_new_tokens or token in row.request.stop_token_ids:
                finished.append(i)
        self.steps += 1
        self.row_steps += n
        if finished:
            self._finish(finished)
        return n

    def _finish(self, indices: list[int]) -> None:
        done = set(indices)
        keep = torch.tensor([i for i in range(len(self.rows)) if i not in done], dtype=torch.long)
        finished = [self.rows[i] for i in indices]
        self.rows = [row for i, row in enumerate(self.rows) if i not in done]
        if self.rows:
            valid = self.valid[keep]
            used = valid.any(dim=0)  # columns only finished rows attended to go with them
            self.keys = [k[keep][:, :, used] for k in self.keys]
            self.values = [v[keep][:, :, used] for v in self.values]
            self.valid = valid[:, used]
        else:
            self.keys, self.values, self.valid = [], [], torch.zeros(0, 0, dtype=torch.bool)
        for row in finished:
            row.result.text = self.engine.tokenizer.decode(row.result.output_ids, skip_special_tokens=True)
            row.on_done(row.result)
