"""Hashrings (config, ketama/hashmod placement, tenant matching, reload), the router's request
splitting in C, its quorum verdicts, and the limits file."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from receiver.hashring import (Endpoint, HashmodRing, HashringConfigError, Hashrings, HashringsFile,
                               KetamaRing, _ringc, hash_series, parse_hashrings)
from receiver.limits import LimitsConfigError, parse_limits
from receiver.remotewrite import decode, encode_write_request
from receiver.router import (BAD, CONFLICT, LIMIT, OK, PENDING, UNAVAILABLE, Router, quorum,
                             write_request_tail)
from receiver.tsdb.labels import encode_labels_key
from storeapi import rpc_pb2


def eps(n: int, azs: int = 0) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i}:10901", f"az{i % azs}" if azs else "") for i in range(n)]


@pytest.fixture(scope="module")
def keys() -> list[bytes]:
    rng = np.random.default_rng(7)
    return [encode_labels_key((("__name__", "m"), ("i", str(i)), ("r", str(rng.integers(1 << 30)))))
            for i in range(20000)]


# ---------------------------------------------------------------- xxhash


def test_xxh64_matches_the_reference_vectors():
    assert _ringc.xxh64(b"") == 0xEF46DB3751D8E999
    assert _ringc.xxh64(b"a") == 0xD24EC4F1A98C6E5B
    assert _ringc.xxh64(b"abc") == 0x44BC2CF5AD770999


def test_xxh64_matches_the_xxhash_package_on_all_lengths():
    xxhash = pytest.importorskip("xxhash")
    rng = np.random.default_rng(1)
    for n in list(range(0, 70)) + [100, 1000, 4097]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _ringc.xxh64(data) == xxhash.xxh64_intdigest(data), n
        assert _ringc.xxh64(data, 42) == xxhash.xxh64_intdigest(data, seed=42), n


def test_hash_series_hashes_tenant_separator_and_key(keys):
    h = hash_series("tenant-a", keys[:100])
    assert h.dtype == np.uint64
    assert [int(x) for x in h] == [_ringc.xxh64(b"tenant-a\xff" + k) for k in keys[:100]]
    assert not np.array_equal(h, hash_series("tenant-b", keys[:100]))


# ---------------------------------------------------------------- config


def test_parse_hashrings_thanos_format():
    specs = parse_hashrings(json.dumps([
        {"hashring": "a", "tenants": ["t1", "team-*"], "tenant_matcher_type": "glob",
         "algorithm": "ketama", "endpoints": ["h1:10901", {"address": "h2:10901", "az": "z1"}],
         "external_labels": {"ring": "a"}},
        {"endpoints": ["h3:10901"]},
    ]))
    assert specs[0].name == "a" and specs[0].algorithm == "ketama"
    assert specs[0].endpoints == (Endpoint("h1:10901"), Endpoint("h2:10901", "z1"))
    assert specs[0].external_labels == (("ring", "a"),)
    assert specs[1].tenants == () and specs[1].tenant_matcher_type == "exact"


@pytest.mark.parametrize("bad", [
    "not json", "[]", "{}", '[{"endpoints": []}]', '[{"endpoints": ["nohostport"]}]',
    '[{"endpoints": ["a:1", "a:1"]}]', '[{"endpoints": ["a:1"], "algorithm": "md5"}]',
    '[{"endpoints": ["a:1"], "tenant_matcher_type": "regex"}]', '[{"endpoints": [7]}]',
])
def test_parse_hashrings_rejects(bad):
    with pytest.raises(HashringConfigError):
        parse_hashrings(bad)


def test_tenant_matching_exact_glob_default():
    specs = parse_hashrings(json.dumps([
        {"hashring": "exact", "tenants": ["acme"], "endpoints": ["a:1"]},
        {"hashring": "glob", "tenants": ["team-*"], "tenant_matcher_type": "glob",
         "endpoints": ["b:1"]},
        {"hashring": "rest", "endpoints": ["c:1"]},
    ]))
    rings = Hashrings(specs, "hashmod", 1)
    assert rings.for_tenant("acme")[0].name == "exact"
    assert rings.for_tenant("team-x")[0].name == "glob"
    assert rings.for_tenant("acme2")[0].name == "rest"
    only = Hashrings(specs[:1], "hashmod", 1)
    assert only.for_tenant("other") is None


# ---------------------------------------------------------------- placement


def test_ketama_replicas_are_distinct_and_balanced(keys):
    ring = KetamaRing(eps(3), 3)
    a = ring.assign(hash_series("t", keys))
    assert a.shape == (len(keys), 3)
    assert (np.sort(a, axis=1) == [0, 1, 2]).all()
    share = np.bincount(a[:, 0], minlength=3) / len(keys)
    assert share.min() > 0.25 and share.max() < 0.42, share


def test_ketama_spreads_replicas_over_zones(keys):
    ring = KetamaRing(eps(6, azs=3), 3)
    a = ring.assign(hash_series("t", keys))
    zones = np.array([int(e.az[2:]) for e in ring.endpoints])[a]
    assert (np.sort(zones, axis=1) == [0, 1, 2]).all()
    # Fewer zones than replicas: zones first, then any other node.
    ring = KetamaRing(eps(4, azs=2), 3)
    a = ring.assign(hash_series("t", keys))
    zones = np.array([int(e.az[2:]) for e in ring.endpoints])[a]
    assert (np.sort(a, axis=1)[:, 1:] != np.sort(a, axis=1)[:, :-1]).all()
    assert (zones[:, 0] != zones[:, 1]).all()


def test_ketama_adding_a_node_moves_about_a_quarter(keys):
    h = hash_series("t", keys)
    for rf in (1, 3):
        before = KetamaRing(eps(3), rf).assign(h)
        after = KetamaRing(eps(4), rf).assign(h)
        primary_moved = float((before[:, 0] != after[:, 0]).mean())
        assert 0.18 < primary_moved < 0.32, (rf, primary_moved)
        # Copies that changed place, out of all copies: also ~1/4 -- only the new node gains.
        b_sets = [set(r) for r in before.tolist()]
        a_sets = [set(r) for r in after.tolist()]
        copies_moved = sum(len(x - y) for x, y in zip(a_sets, b_sets)) / (rf * len(keys))
        assert 0.18 < copies_moved < 0.32, (rf, copies_moved)
        assert all(x - y <= {3} for x, y in zip(a_sets, b_sets))
    # hashmod reshuffles most series instead.
    moved = float((HashmodRing(eps(3), 1).assign(h) != HashmodRing(eps(4), 1).assign(h)).mean())
    assert moved > 0.6


def test_ketama_removing_a_node_moves_only_its_series(keys):
    h = hash_series("t", keys)
    before = KetamaRing(eps(4), 1).assign(h)[:, 0]
    after = KetamaRing(eps(3), 1).assign(h)[:, 0]
    changed = before != after
    assert (before[changed] == 3).all()
    assert (before == 3).sum() == changed.sum()


def test_hashmod_is_hash_plus_replica_mod_n(keys):
    h = hash_series("t", keys[:500])
    a = HashmodRing(eps(5), 3).assign(h)
    for i in range(3):
        assert (a[:, i] == ((h + np.uint64(i)) % np.uint64(5)).astype(np.int32)).all()


def test_replication_factor_above_node_count_is_refused():
    with pytest.raises(HashringConfigError):
        KetamaRing(eps(2), 3)
    with pytest.raises(HashringConfigError):
        HashmodRing(eps(2), 3)


def test_hashrings_file_reloads_and_keeps_old_rings_on_bad_edit(tmp_path):
    f = tmp_path / "h.json"
    f.write_text(json.dumps([{"endpoints": ["a:1", "b:1"]}]))
    changes = []
    hf = HashringsFile(f, "ketama", 1, on_change=changes.append)
    assert hf.rings.all_endpoints() == {"a:1", "b:1"}
    assert not hf.refresh()
    f.write_text(json.dumps([{"endpoints": ["a:1", "b:1", "c:1"]}]))
    os.utime(f, ns=(1, 1))
    assert hf.refresh() and len(changes) == 1
    assert hf.rings.all_endpoints() == {"a:1", "b:1", "c:1"}
    f.write_text("{broken")
    os.utime(f, ns=(2, 2))
    assert not hf.refresh()
    assert hf.rings.all_endpoints() == {"a:1", "b:1", "c:1"}


# ---------------------------------------------------------------- request splitting


def _request(n: int) -> bytes:
    return encode_write_request(
        ((("__name__", "m"), ("i", str(i))), np.arange(i % 4 + 1, dtype=np.int64) + 1000,
         np.full(i % 4 + 1, float(i))) for i in range(n))


def test_spans_and_gather_cut_series_out_of_the_original_bytes():
    raw = _request(50)
    dec = decode(raw)
    spans = _ringc.series_spans(raw)
    assert len(spans) == 16 * 50
    pick = np.array([3, 7, 49, 0], dtype=np.int32)
    part = decode(_ringc.gather(raw, spans, pick.tobytes()))
    assert part.keys == [dec.keys[i] for i in pick.tolist()]
    assert part.n_samples == sum(i % 4 + 1 for i in pick.tolist())
    with pytest.raises(IndexError):
        _ringc.gather(raw, spans, np.array([50], dtype=np.int32).tobytes())
    with pytest.raises(ValueError):
        _ringc.series_spans(b"\x0a\xff")


def test_forwarded_request_is_a_thanos_write_request():
    raw = _request(10)
    body = _ringc.gather(raw, _ringc.series_spans(raw), np.arange(10, dtype=np.int32).tobytes())
    msg = body + write_request_tail("team-a", 2)
    pb = rpc_pb2.WriteRequest.FromString(msg)
    assert pb.tenant == "team-a" and pb.replica == 2 and len(pb.timeseries) == 10
    # ... and the ingestor's parser gets back exactly the remote-write body.
    got_body, tenant, replica = _ringc.split_write(pb.SerializeToString())
    assert (tenant, replica) == ("team-a", 2)
    assert decode(got_body).keys == decode(raw).keys
    # Fields in any order, series interleaved with other fields.
    mixed = rpc_pb2.WriteRequest(tenant="t", replica=1)
    mixed.timeseries.extend(pb.timeseries[:3])
    got_body, tenant, replica = _ringc.split_write(write_request_tail("t", 1) + mixed.SerializeToString())
    assert tenant == "t" and replica == 1 and len(decode(got_body).keys) == 3


def test_quorum():
    assert [quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 3, 3]


@pytest.mark.parametrize("rows,status", [
    ([[OK, OK, OK]], 200),
    ([[OK, OK, UNAVAILABLE]], 200),
    ([[OK, UNAVAILABLE, UNAVAILABLE]], 503),
    ([[CONFLICT, CONFLICT, OK]], 409),
    ([[CONFLICT, CONFLICT, UNAVAILABLE]], 409),
    ([[CONFLICT, OK, OK]], 200),
    ([[BAD, BAD, OK]], 400),
    ([[LIMIT, LIMIT, LIMIT]], 429),
    ([[OK, OK, OK], [OK, PENDING, UNAVAILABLE]], 503),
])
def test_verdict_follows_thanos(rows, status):
    assert Router._verdict(np.array(rows, dtype=np.int8), 2, {}).status == status


# ---------------------------------------------------------------- limits


def test_limits_file_defaults_and_tenant_overrides():
    lim = parse_limits("""
write:
  global: {max_concurrency: 4}
  default:
    request: {size_bytes_limit: 1000, series_limit: 10, samples_limit: 100}
    head_series_limit: 50
  tenants:
    big: {request: {series_limit: 0}}
""")
    assert lim.max_concurrency == 4
    assert lim.check_request("any", 1001, 1, 1) and lim.check_request("any", 1, 11, 1)
    assert lim.check_request("any", 1, 1, 101) and not lim.check_request("any", 1000, 10, 100)
    assert not lim.check_request("big", 1, 10_000, 1)      # 0: unlimited for this tenant
    assert lim.check_request("big", 1001, 1, 1)            # other fields fall back to the default
    assert lim.check_head("big", 50) and not lim.check_head("big", 49)
    assert parse_limits("").check_request("x", 1 << 40, 1 << 30, 1 << 30) is None
    with pytest.raises(LimitsConfigError):
        parse_limits("write: {default: {head_series_limit: -1}}")
