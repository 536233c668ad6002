"""The store's LRU cache (store.cache.LRUCache, its steps in C: store/_lru.c) against the
Python implementation it replaced, kept here as the reference: over random batches of gets,
inserts, repeats, oversized items, non-tuple keys and evictions, the values returned, the
order of the entries, the accounted size, the item types kept aside and every count the
metrics read are the same."""
from __future__ import annotations

import random
from collections import OrderedDict, deque
from itertools import compress, repeat

import pytest

from common.ops import new_registry
from store.cache import ENTRY_OVERHEAD, CacheMetrics, LRUCache


class ReferenceLRU:
    """LRUCache as it was written in Python (session 17), with its metrics' counts; one fix:
    it took a cached empty value for a miss when a batch had a miss too (``compress`` of the
    values), neither moving nor counting it as a hit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self._d: OrderedDict = OrderedDict()
        self._types: dict = {}
        self.requests: dict = {}
        self.hits: dict = {}
        self.added: dict = {}
        self.evicted: dict = {}

    def _count(self, item_type, requests, hits):
        self.requests[item_type] = self.requests.get(item_type, 0) + requests
        self.hits[item_type] = self.hits.get(item_type, 0) + hits

    def get(self, key, item_type):
        hit = self._d.get(key)
        self._count(item_type, 1, hit is not None)
        if hit is None:
            return None
        self._d.move_to_end(key)
        return hit

    def get_many(self, keys, item_type):
        d = self._d
        if len(keys) == 1:
            return [self.get(keys[0], item_type)]
        found = list(map(d.get, keys))
        hit_keys = keys if None not in found else list(compress(keys, _present(found)))
        deque(map(d.move_to_end, hit_keys), maxlen=0)
        self._count(item_type, len(keys), len(hit_keys))
        return found

    def get_all(self, keys, item_type):
        d = self._d
        found = list(map(d.get, keys))
        if None in found:
            return None
        deque(map(d.move_to_end, keys), maxlen=0)
        self._count(item_type, len(keys), len(keys))
        return found

    def get_each(self, keys, item_type):
        d = self._d
        found = list(map(d.get, keys))
        hit_keys = keys if None not in found else list(compress(keys, _present(found)))
        deque(map(d.move_to_end, hit_keys), maxlen=0)
        if hit_keys:
            self._count(item_type, len(hit_keys), len(hit_keys))
        return found

    def put_many(self, keys, values, item_type):
        if not keys:
            return
        d = self._d
        sizes = list(map(len, values))
        fits = self.max_bytes - ENTRY_OVERHEAD
        if max(sizes) > fits:
            keep = [s <= fits for s in sizes]
            keys, values, sizes = (list(compress(x, keep)) for x in (keys, values, sizes))
            if not keys:
                return
        olds = list(map(d.pop, keys, repeat(None)))
        if olds.count(None) != len(olds):
            self.size -= sum(len(o) + ENTRY_OVERHEAD for o in olds if o is not None)
        before = len(d)
        d.update(zip(keys, values))
        if set(map(type, keys)) != {tuple}:
            self._types.update((k, item_type) for k in keys if type(k) is not tuple)
        added = len(keys)
        if len(d) - before == added:
            self.size += sum(sizes) + added * ENTRY_OVERHEAD
        else:
            self.size += sum(len(d[k]) + ENTRY_OVERHEAD for k in dict.fromkeys(keys))
        evicted: dict = {}
        while self.size > self.max_bytes:
            k, v = d.popitem(last=False)
            self.size -= len(v) + ENTRY_OVERHEAD
            t = k[1] if type(k) is tuple else self._types.pop(k, "")
            evicted[t] = evicted.get(t, 0) + 1
        self.added[item_type] = self.added.get(item_type, 0) + added
        for t, n in evicted.items():
            self.evicted[t] = self.evicted.get(t, 0) + n


def _present(found: list) -> list[bool]:
    return [v is not None for v in found]


def _state(c: LRUCache, m: CacheMetrics) -> tuple:
    nonzero = lambda d: {k: v for k, v in d.items() if v}  # noqa: E731 (ITEM_TYPES start at 0)
    return (list(c._d.items()), c.size, dict(c._types), nonzero(m.lookups.requests),
            nonzero(m.lookups.hits), nonzero(m.added.counts), nonzero(m.evicted.counts))


def _ref_state(r: ReferenceLRU) -> tuple:
    nonzero = lambda d: {k: v for k, v in d.items() if v}  # noqa: E731
    return (list(r._d.items()), r.size, dict(r._types), nonzero(r.requests), nonzero(r.hits),
            nonzero(r.added), nonzero(r.evicted))


@pytest.mark.parametrize("seed", range(6))
def test_lru_steps_are_those_of_the_python_reference(seed: int) -> None:
    rnd = random.Random(seed)
    budget = rnd.choice([0, 200, 1500, 6000, 1 << 20])
    m = CacheMetrics(new_registry())
    c, ref = LRUCache(budget, m), ReferenceLRU(budget)
    kinds = ["postings", "series", "chunks", "expanded_postings"]

    def key():
        roll = rnd.random()
        if roll < 0.8:
            return ("b%d" % rnd.randrange(3), rnd.choice(kinds), rnd.randrange(40))
        return rnd.choice(["flat-a", "flat-b", 7, ("x",) * 0 + ("t", "series", 1)])

    for _ in range(3000):
        op = rnd.random()
        kind = rnd.choice(kinds)
        keys = [key() for _ in range(rnd.choice([0, 1, 1, 2, 3, 8]))]
        if op < 0.45:
            values = [bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 5, 60, 300, 2000])))
                      for _ in keys]
            c.put_many(keys, values, kind)
            ref.put_many(keys, values, kind)
        else:
            name = rnd.choice(["get_many", "get_all", "get_each"])
            assert getattr(c, name)(keys, kind) == getattr(ref, name)(keys, kind), name
        assert _state(c, m) == _ref_state(ref)
    assert c.get(keys[0] if keys else ("b0", "series", 1), "series") == \
        ref.get(keys[0] if keys else ("b0", "series", 1), "series")
    assert _state(c, m) == _ref_state(ref)


def test_lru_keeps_a_repeated_keys_last_value_and_evicts_oldest_first() -> None:
    m = CacheMetrics(new_registry())
    c = LRUCache(3 * (ENTRY_OVERHEAD + 10), m)
    a, b, d = (("blk", "series", i) for i in range(3))
    c.put_many([a, a, b], [b"1" * 10, b"2" * 10, b"3" * 10], "series")
    assert list(c._d.items()) == [(a, b"2" * 10), (b, b"3" * 10)]
    assert c.size == 2 * (ENTRY_OVERHEAD + 10)
    assert c.get_many([b, a], "series") == [b"3" * 10, b"2" * 10]  # a is newest now
    c.put_many([d, "flat"], [b"4" * 10, b"5" * 10], "chunks")  # one over: b evicted
    assert list(c._d) == [a, d, "flat"] and m.evicted.counts["series"] == 1
    c.put_many([("blk", "series", 9)], [b"6" * 10], "series")  # the oldest, a, goes
    assert list(c._d) == [d, "flat", ("blk", "series", 9)] and m.evicted.counts["series"] == 2
    assert c.get_all([a], "series") is None and c.get_each([a, "flat"], "x") == [None, b"5" * 10]
    assert m.lookups.requests["x"] == 1 and m.lookups.hits["x"] == 1
    c.put_many(["big"], [b"z" * (4 * (ENTRY_OVERHEAD + 10))], "chunks")  # larger than the budget
    assert "big" not in c._d


def test_a_cached_empty_value_is_a_hit_in_a_batch_with_a_miss() -> None:
    """Regression: an empty value (an empty selection's kept refs) found in a batch that
    also missed was counted as a miss and left where it was, to be evicted first."""
    m = CacheMetrics(new_registry())
    c = LRUCache(1 << 20, m)
    empty, full = ("blk", "expanded_postings", 1), ("blk", "expanded_postings", 2)
    c.put_many([empty, full], [b"", b"x"], "expanded_postings")
    got = c.get_each([empty, ("blk", "expanded_postings", 3)], "expanded_postings")
    assert got == [b"", None]
    assert list(c._d) == [full, empty]
    assert m.lookups.hits["expanded_postings"] == 1
    assert c.get_many([empty, ("blk", "expanded_postings", 4)], "expanded_postings") == [b"", None]
    assert m.lookups.hits["expanded_postings"] == 2
    assert m.lookups.requests["expanded_postings"] == 3
