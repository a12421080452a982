"""The radix prefix cache: matching, splitting, budget and LRU eviction."""

from __future__ import annotations

import pytest
import torch

from recslm.serve.radix import RadixCache, kv_length


def kv_for(ids: list[int], layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fake KV whose entries encode (layer, token id): a wrong slice or join shows up in the values."""
    t = torch.tensor(ids, dtype=torch.float32)
    return [(t.repeat(2, 1)[..., None] + 1000 * layer, -t.repeat(2, 1)[..., None] - 1000 * layer) for layer in range(layers)]


def test_longest_prefix_and_its_exact_kv():
    cache = RadixCache(budget=100)
    assert cache.match([1, 2, 3]).length == 0
    assert cache.insert([1, 2, 3, 4], kv_for([1, 2, 3, 4])) == 4
    hit = cache.match([1, 2, 3, 9, 9])
    assert hit.length == 3 and kv_length(hit.kv) == 3
    assert torch.equal(hit.kv[1][0], kv_for([1, 2, 3])[1][0])
    assert cache.insert([1, 2, 7], kv_for([1, 2, 7])) == 1  # only the new token is stored
    assert cache.tokens == 5 and len(cache) == 4  # [1,2] -> {[3] -> [4], [7]}
    full = cache.match([1, 2, 3, 4])
    assert full.length == 4 and torch.equal(full.kv[0][1], kv_for([1, 2, 3, 4])[0][1])
    assert torch.equal(cache.match([1, 2, 7]).kv[0][0], kv_for([1, 2, 7])[0][0])


def test_budget_evicts_least_recently_used_leaves_first():
    cache = RadixCache(budget=10)
    cache.insert([1, 2, 3, 4], kv_for([1, 2, 3, 4]))
    cache.insert([5, 6, 7], kv_for([5, 6, 7]))
    cache.match([1, 2, 3, 4])  # member 1 is recent again
    cache.insert([8, 9, 10, 11], kv_for([8, 9, 10, 11]))  # 11 tokens > 10: evict the oldest leaf
    assert cache.tokens <= 10 and cache.evicted == 3
    assert cache.match([5, 6, 7]).length == 0
    assert cache.match([1, 2, 3, 4]).length == 4 and cache.match([8, 9, 10, 11]).length == 4


def test_shared_prefix_survives_while_a_leaf_below_it_is_evicted():
    cache = RadixCache(budget=8)
    cache.insert([1, 2, 3, 4, 5], kv_for([1, 2, 3, 4, 5]))
    cache.insert([1, 2, 3, 9], kv_for([1, 2, 3, 9]))  # split: [1,2,3] -> {[4,5], [9]}: 6 tokens
    cache.match([1, 2, 3, 9])
    cache.insert([20, 21], kv_for([20, 21]))  # 8 tokens: at budget
    cache.insert([30], kv_for([30]))  # 9 > 8: the oldest leaf [4,5] goes, not the shared [1,2,3]
    assert cache.match([1, 2, 3, 4, 5]).length == 3 and cache.match([1, 2, 3, 9]).length == 4


def test_zero_budget_caches_nothing_and_bad_input_is_refused():
    cache = RadixCache(budget=0)
    cache.insert([1, 2], kv_for([1, 2]))
    assert cache.tokens == 0 and cache.match([1, 2]).length == 0
    with pytest.raises(ValueError, match="covers 2 tokens but 3"):
        cache.insert([1, 2, 3], kv_for([1, 2]))
    with pytest.raises(ValueError, match="budget"):
        RadixCache(budget=-1)
