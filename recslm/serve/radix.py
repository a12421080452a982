"""A radix tree of prefix KV caches, bounded by a token budget with LRU eviction.

Each edge of the tree is a run of token ids; its node holds the KV cache of exactly those
tokens (one key and one value tensor per layer, tokens on dimension -2), computed in the
context of the path above it. A request's longest cached prefix is the path its tokens
follow; only the rest has to be prefilled, and its KV joins the tree for the next request.
For "one member, k candidates" traffic the member's prompt is computed once.

The tree holds at most ``budget`` tokens: inserting beyond that evicts the least recently
used leaves first (a leaf's prefix is the least shared: nothing below it depends on it).
The engine uses the tree from one worker thread; it is not thread-safe by itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

# per layer: (keys, values), each [kv_heads, tokens, head_dim]
KV = list[tuple[torch.Tensor, torch.Tensor]]


def kv_length(kv: KV) -> int:
    return int(kv[0][0].shape[-2]) if kv else 0


def kv_slice(kv: KV, start: int, end: int | None = None) -> KV:
    return [(k[..., start:end, :], v[..., start:end, :]) for k, v in kv]


def kv_concat(parts: list[KV]) -> KV:
    if len(parts) == 1:
        return parts[0]
    return [(torch.cat([p[i][0] for p in parts], dim=-2), torch.cat([p[i][1] for p in parts], dim=-2)) for i in range(len(parts[0]))]


_clock = itertools.count()


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: KV
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    last_used: int = field(default_factory=lambda: next(_clock))


@dataclass(frozen=True)
class Match:
    """The longest cached prefix of a query: its length and its KV (empty when nothing matched)."""

    length: int
    kv: KV


class RadixCache:
    def __init__(self, budget: int):
        if budget < 0:
            raise ValueError(f"cache budget must be >= 0 tokens, got {budget}")
        self.budget = budget
        self.root = _Node((), [], None)
        self.tokens = 0  # cached tokens over all nodes
        self.evicted = 0  # tokens evicted so far

    def match(self, ids: list[int] | tuple[int, ...]) -> Match:
        """The longest prefix of ``ids`` in the tree; touching its nodes makes them recent."""
        node, position, parts = self.root, 0, []
        while position < len(ids):
            child = node.children.get(ids[position])
            if child is None:
                break
            common = _common_length(child.tokens, ids[position:])
            if common < len(child.tokens):
                child = self._split(child, common)
            child.last_used = next(_clock)
            parts.append(child.kv)
            position += common
            node = child
        return Match(position, kv_concat(parts) if parts else [])

    def insert(self, ids: list[int] | tuple[int, ...], kv: KV) -> int:
        """Cache ``kv`` (the KV of ``ids``, all of them); returns how many tokens were new.

        Tokens already in the tree keep their stored KV. Afterwards the tree is cut back to
        the budget (possibly evicting what was just inserted if it alone exceeds it).
        """
        if kv_length(kv) != len(ids):
            raise ValueError(f"KV covers {kv_length(kv)} tokens but {len(ids)} token ids were given")
        node, position = self.root, 0
        while position < len(ids):
            child = node.children.get(ids[position])
            if child is None:
                rest = tuple(ids[position:])
                node.children[rest[0]] = _Node(rest, [(k.clone(), v.clone()) for k, v in kv_slice(kv, position)], node)
                self.tokens += len(rest)
                added = len(rest)
                break
            common = _common_length(child.tokens, ids[position:])
            if common < len(child.tokens):
                child = self._split(child, common)
            child.last_used = next(_clock)
            position += common
            node = child
        else:
            added = 0
        self._evict()
        return added

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node``'s edge after ``at`` tokens; returns the new upper node."""
        upper = _Node(node.tokens[:at], kv_slice(node.kv, 0, at), node.parent, last_used=node.last_used)
        node.parent.children[node.tokens[0]] = upper
        node.tokens, node.kv, node.parent = node.tokens[at:], kv_slice(node.kv, at), upper
        upper.children[node.tokens[0]] = node
        return upper

    def _evict(self) -> None:
        while self.tokens > self.budget:
            leaves = [n for n in self._nodes() if not n.children]
            if not leaves:
                return
            victim = min(leaves, key=lambda n: n.last_used)
            del victim.parent.children[victim.tokens[0]]
            self.tokens -= len(victim.tokens)
            self.evicted += len(victim.tokens)

    def _nodes(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def __len__(self) -> int:
        """Nodes in the tree (for tests and stats)."""
        return sum(1 for _ in self._nodes())


def _common_length(a: tuple[int, ...], b) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
