"""Query frontend building blocks: splitting on interval boundaries, extents, cache config."""
from __future__ import annotations

import random

import pytest

from frontend.config import (CacheConfigError, InMemoryCacheConfig, MemcachedConfig,
                             parse_cache_config)
from frontend.extents import Extent, decode, encode, fold, plan
from frontend.matrix import join_series, slice_series
from frontend.split import align_to_step, split_by_interval

DAY = 86_400_000


@pytest.mark.parametrize("step", [15_000, 60_000, 420_000, 3_600_000, 2 * DAY])
@pytest.mark.parametrize("start", [0, 5, 1_700_000_123_456, 1_700_000_000_000 - 7 * DAY])
def test_split_parts_cover_every_step_once_within_one_interval(start, step):
    end = start + 7 * DAY + 12_345
    parts = split_by_interval(start, end, step, DAY)
    points = [t for s, e in parts for t in range(s, e + 1, step)]
    assert points == list(range(start, end + 1, step))  # no duplicate, none missing
    for s, e in parts:
        assert (s - start) % step == 0 and (e - start) % step == 0
        assert s // DAY == e // DAY or step > DAY  # never crosses a day boundary


def test_split_single_point_and_no_interval():
    assert split_by_interval(10, 10, 60_000, DAY) == [(10, 10)]
    assert split_by_interval(0, 3 * DAY, 60_000, 0) == [(0, 3 * DAY)]
    assert align_to_step(125_000, 430_000, 60_000) == (120_000, 420_000)


def _series(lo: int, hi: int, step: int, names=("a", "b")) -> list[dict]:
    return [{"metric": {"n": n}, "values": [[t / 1000, f"{n}{t}"] for t in range(lo, hi + 1, step)]}
            for n in names]


def test_plan_and_fold_give_back_exactly_the_uncached_answer():
    rng = random.Random(3)
    step = 60_000
    for _ in range(200):
        extents: list[Extent] = []
        for _ in range(rng.randint(0, 4)):
            a = rng.randrange(0, 200) * step
            b = a + rng.randrange(0, 60) * step
            extents = fold(extents, Extent(a, b, slice_series(_series(0, 300 * step, step), a, b)),
                           step)
        for x, y in zip(extents, extents[1:]):
            assert x.end_ms + step < y.start_ms  # folded extents are disjoint and not touching
        s = rng.randrange(0, 150) * step
        e = s + rng.randrange(0, 120) * step
        pieces, gaps = plan(extents, s, e, step)
        got = join_series([slice_series(ext.series, a, b) if ext else _series(a, b, step)
                           for a, b, ext in pieces if a <= b])
        assert got == _series(s, e, step)
        covered = [t for a, b, _ in pieces for t in range(a, b + 1, step)]
        assert covered == list(range(s, e + 1, step))
        assert all(ext is None for a, b, ext in pieces if (a, b) in gaps)


def test_extents_round_trip_and_garbage_reads_as_none():
    ext = [Extent(0, 60_000, _series(0, 60_000, 60_000))]
    assert decode(encode(ext)) == ext
    assert decode(b"\x00garbage") == [] and decode(b'{"s": 1}') == []


def test_join_keeps_series_apart_and_histograms():
    h = {"metric": {"n": "h"}, "histograms": [[1.0, {"count": "1", "sum": "1"}]]}
    got = join_series([[h], _series(0, 0, 1000, ("z",))])
    assert [s["metric"]["n"] for s in got] == ["h", "z"] and got[0]["histograms"] == h["histograms"]


def test_cache_config_thanos_yaml():
    assert parse_cache_config("type: IN-MEMORY\nconfig:\n  max_size: 1GB\n  max_size_items: 10\n"
                              "  validity: 1h\n") == InMemoryCacheConfig(10**9, 10, 3600.0)
    m = parse_cache_config("type: MEMCACHED\nconfig:\n  addresses: [a:1, b:2]\n  timeout: 100ms\n"
                           "  max_item_size: 2MiB\n  max_async_buffer_size: 10\n")
    assert isinstance(m, MemcachedConfig) and m.addresses == ["a:1", "b:2"]
    assert m.timeout_s == 0.1 and m.max_item_size == 2 << 20 and m.expiration_s == 86400
    assert parse_cache_config("") is None
    for bad in ("type: REDISX\n", "type: MEMCACHED\nconfig: {}\n",
                "type: IN-MEMORY\nconfig:\n  max_sise: 1GB\n", "type: [\n"):
        with pytest.raises(CacheConfigError):
            parse_cache_config(bad)


def test_memcached_yaml_is_read_by_the_one_shared_parser_for_frontend_and_store():
    """The frontend's results cache and the store's index cache accept the same MEMCACHED
    config and read it the same way (common.memcache.parse_memcached_config)."""
    from store.cache import parse_index_cache_config
    conf = ("config:\n  addresses: [dns+mc:11211, b:2]\n  timeout: 250ms\n"
            "  max_idle_connections: 7\n  max_item_size: 2MiB\n  auto_discovery: false\n")
    f = parse_cache_config("type: MEMCACHED\n" + conf)
    s = parse_index_cache_config("type: MEMCACHED\n" + conf).backend.memcached
    for c in (f, s):
        assert c.addresses == ["mc:11211", "b:2"] and c.timeout_s == 0.25
        assert c.max_idle_connections == 7 and c.max_item_size == 2 << 20
    for bad in ("addresses: [dnssrv+_mc._tcp.x]", "addresses: [nohost]", "timeout: soon",
                "max_item_size: -1", "max_idle_connections: -2"):
        with pytest.raises(CacheConfigError):
            parse_cache_config(f"type: MEMCACHED\nconfig:\n  {bad}\n")
        with pytest.raises(ValueError):
            parse_index_cache_config(f"type: MEMCACHED\nconfig:\n  {bad}\n")
