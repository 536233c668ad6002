"""Hashrings (config, ketama/hashmod placement, tenant matching, reload), the router's request
splitting in C, its quorum verdicts, and the limits file."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from receiver.hashring import (Endpoint, HashmodRing, HashringConfigError, Hashrings, HashringsFile,
                               InsufficientNodesError, KetamaRing, _ringc, hash_series,
                               parse_hashrings)
from receiver.limits import LimitsConfigError, parse_limits
from receiver.remotewrite import decode, encode_write_request
from receiver.router import (BAD, CONFLICT, LIMIT, OK, PENDING, UNAVAILABLE, Router, quorum,
                             write_request_tail)
from receiver.tsdb.labels import decode_labels_key, encode_labels_key
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


def test_hash_series_is_thanos_hash_with_prefix(keys):
    """labelpb.HashWithPrefix: tenant 0xff, then name 0xff value 0xff per label, in request
    order -- also past Thanos's 1 KiB fast-path buffer."""
    xxhash = pytest.importorskip("xxhash")
    long = encode_labels_key((("__name__", "m" * 700), ("b", "v" * 500), ("a", "x")))
    sample = keys[:100] + [long, b""]
    h = hash_series("tenant-a", sample)
    assert h.dtype == np.uint64
    want = []
    for k in sample:
        raw = b"tenant-a\xff" + b"".join(
            n.encode() + b"\xff" + v.encode() + b"\xff" for n, v in decode_labels_key(k))
        want.append(xxhash.xxh64_intdigest(raw))
    assert [int(x) for x in h] == want
    assert not np.array_equal(h, hash_series("tenant-b", keys[:100]))
    with pytest.raises(ValueError):
        hash_series("t", [b"\x05ab"])


# ---------------------------------------------------------------- config


def test_parse_hashrings_thanos_format():
    specs = parse_hashrings(json.dumps([
        {"hashring": "a", "tenants": ["t1", "team-*"], "tenant_matcher_type": "glob",
         "algorithm": "ketama", "endpoints": ["h1:10901", {"address": "h2:10901", "az": "z1"}],
         "external_labels": {"ring": "a"}},
        {"endpoints": ["h3:10901"]},
    ]))
    assert specs[0].name == "a" and specs[0].algorithm == "ketama"
    assert specs[0].endpoints == (Endpoint("h1:10901", "", "h1:19391"),
                                  Endpoint("h2:10901", "z1", "h2:19391"))
    assert specs[0].external_labels == (("ring", "a"),)
    assert specs[1].tenants == () and specs[1].tenant_matcher_type == "exact"


@pytest.mark.parametrize("bad", [
    "not json", "[]", "{}", '[{"endpoints": [""]}]', '[{"endpoints": [{"az": "a"}]}]',
    '[{"endpoints": ["a:1", "a:1"]}]', '[{"endpoints": "a:1"}]',
    '[{"endpoints": ["a:1"], "tenant_matcher_type": "regex"}]', '[{"endpoints": [7]}]',
    '[{"endpoints": ["a:1"], "tenants": ["x["], "tenant_matcher_type": "glob"}]',
    '[{"endpoints": ["a:1"], "shuffle_sharding_config": {"shard_size": 1}}]',
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


def test_replication_factor_above_node_count():
    """Thanos refuses such a ketama ring; a hashmod ring loads but fails every write."""
    with pytest.raises(HashringConfigError, match="ketama: amount of endpoints needs to be larger"):
        KetamaRing(eps(2), 3)
    with pytest.raises(InsufficientNodesError, match="insufficient nodes; have 2, want 3"):
        HashmodRing(eps(2), 3).assign(np.zeros(1, np.uint64))


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


# ---------------------------------------------------------------- Thanos's own vectors
# Cases from Thanos's pkg/receive/hashring_test.go (inputs and expected endpoints), so that a
# Thanos router and a promring router place every series on the same ingestors.


def _ep(*addrs: str, azs: str = "") -> list[Endpoint]:
    return [Endpoint(a, azs[i] if azs else "") for i, a in enumerate(addrs)]


def _place(ring, tenant: str, labels, n: int) -> str:
    h = hash_series(tenant, [encode_labels_key(tuple(labels))])
    return ring.endpoints[int(ring.assign(h)[0, n])].address


def _spec(eps_, tenants=(), glob=False):
    return {"endpoints": list(eps_), **({"tenants": list(tenants)} if tenants else {}),
            **({"tenant_matcher_type": "glob"} if glob else {})}


FOO = (("foo", "bar"), ("baz", "qux"))  # as Thanos's test sends it: not sorted


@pytest.mark.parametrize("cfg,tenant,nodes", [
    ([_spec(["node1"])], "", {"node1"}),
    ([_spec(["node2"], ["tenant2"]), _spec(["node1"])], "tenant2", {"node2"}),
    ([_spec(["node1"], ["tenant1"]), _spec(["node2"], ["tenant2"]), _spec(["node3"], ["tenant3"])],
     "tenant1", {"node1"}),
    ([_spec(["node1"], ["tenant1"]), _spec(["node2"], ["tenant2"]), _spec(["node3"], ["tenant3"])],
     "tenant4", None),
    ([_spec(["node1", "node2", "node3"], ["tenant1"]), _spec(["node4", "node5", "node6"])],
     "tenant1", {"node1", "node2", "node3"}),
    ([_spec(["node1", "node2", "node3"], ["tenant1"]), _spec(["node4", "node5", "node6"])],
     "", {"node4", "node5", "node6"}),
    ([_spec(["node1", "node2", "node3"], ["prefix*"], glob=True), _spec(["node4", "node5", "node6"])],
     "prefix-1", {"node1", "node2", "node3"}),
    ([_spec(["node1", "node2", "node3"], ["prefix*"], glob=True), _spec(["node4", "node5", "node6"])],
     "suffix-1", {"node4", "node5", "node6"}),
    ([_spec(["node1", "node2", "node3"], ["t1-*", "t2", "t3-*"], glob=True),
      _spec(["node4", "node5", "node6"])], "t2", {"node1", "node2", "node3"}),
], ids=["simple", "specific", "many tenants", "many tenants error", "many nodes",
        "many nodes default", "glob match", "glob not match", "glob multiple matches"])
def test_thanos_hashring_get(cfg, tenant, nodes):
    """TestHashringGet: hashmod, replication factor 3 (the file loads even for 1-node rings)."""
    rings = Hashrings(parse_hashrings(json.dumps(cfg)), "hashmod", 3)
    found = rings.for_tenant(tenant)
    if nodes is None:
        assert found is None
        return
    ring = found[1]
    if len(ring.endpoints) >= 3:
        assert _place(ring, tenant, FOO, 0) in nodes
    assert {e.address for e in ring.endpoints} == nodes


def test_thanos_hashring_get_empty_config_matches_no_tenant():
    assert Hashrings([], "hashmod", 3).for_tenant("tenant1") is None


NGINX, THANOS = (("pod", "nginx"),), (("pod", "thanos"),)


@pytest.mark.parametrize("addrs,labels,n,want", [
    (("node-1", "node-2", "node-3"), NGINX, 0, "node-2"),
    (("node-1", "node-2", "node-3"), NGINX, 1, "node-1"),
    (("node-1", "node-2", "node-3"), NGINX, 2, "node-3"),
    (("node-1", "node-3", "node-2"), NGINX, 2, "node-3"),
    (("node-0", "node-1", "node-2", "node-3"), NGINX, 0, "node-2"),
    (("node-1", "node-2", "node-3", "node-4"), NGINX, 0, "node-2"),
    (("node-1", "node-2", "node-3"), THANOS, 0, "node-3"),
])
def test_thanos_ketama_hashring_get(addrs, labels, n, want):
    """TestKetamaHashringGet: 10 sections per node, replication factor n+1, tenant "tenant"."""
    ring = KetamaRing(_ep(*addrs), n + 1, sections_per_node=10)
    assert _place(ring, "tenant", labels, n) == want


def test_thanos_ketama_bad_config_is_rejected():
    with pytest.raises(HashringConfigError):
        KetamaRing(_ep("node-1"), 2, sections_per_node=1)


def test_thanos_invalid_az_hashring_cfg():
    """TestInvalidAZHashringCfg: AZs with hashmod refuse to start, with Thanos's message."""
    specs = parse_hashrings(json.dumps([{"endpoints": [{"address": "a", "az": "1"},
                                                       {"address": "b", "az": "2"}]}]))
    with pytest.raises(HashringConfigError) as e:
        Hashrings(specs, "hashmod", 2)
    assert str(e.value) == ("Hashmod algorithm does not support AZ aware hashring configuration. "
                            "Either use Ketama or remove AZ configuration.")
    assert Hashrings(specs, "ketama", 2).for_tenant("x") is not None


@pytest.fixture(scope="module")
def nginx_hashes() -> np.ndarray:
    """makeSeries(): 10000 series pod=nginx-i of tenant "tenant"."""
    return hash_series("tenant", [encode_labels_key((("pod", f"nginx-{i}"),)) for i in range(10000)])


def _assignments(ring: KetamaRing, h: np.ndarray) -> dict[str, set[int]]:
    a = ring.assign(h)
    return {e.address: set(np.flatnonzero((a == i).any(axis=1)).tolist())
            for i, e in enumerate(ring.endpoints)}


@pytest.mark.parametrize("initial,resized,rf", [
    (_ep("node-1", "node-2", "node-3"), _ep("node-1", "node-2", "node-3", "node-4", "node-5"), 1),
    (_ep("node-1", "node-3"), _ep("node-1", "node-2", "node-3"), 1),
    (_ep("node-1", "node-4", "node-5"), _ep("node-4", "node-3", "node-1", "node-2", "node-5"), 2),
    (_ep("a", "b", "c", azs="123"), _ep("b", "c", "a", "d", "e", azs="23124"), 3),
    (_ep("a", "b", "c", azs="123"), _ep("a", "b", "c", "d", "e", "f", azs="123123"), 3),
    (_ep("a", "b", "c", azs="123"), _ep("a", "b", "c", "d", "e", "f", azs="123456"), 3),
    (_ep("a", "b", "c", azs="123"), _ep("a", "b", "c", "d", "e", "f", azs="123456"), 2),
    (_ep("a", "c", "f", azs="123"), _ep("a", "b", "c", "d", "f", azs="11223"), 2),
])
def test_thanos_ketama_growing_ring_gives_old_nodes_no_new_series(nginx_hashes, initial, resized, rf):
    """TestKetamaHashringIncreaseAtEnd/InMiddle/ReplicationConsistency(WithAZs)."""
    before = _assignments(KetamaRing(initial, rf), nginx_hashes)
    after = _assignments(KetamaRing(resized, rf), nginx_hashes)
    for e in initial:
        assert after[e.address] <= before[e.address], e.address


@pytest.mark.parametrize("nodes,rf", [
    (_ep("a", "b", "c", "d", azs="1212"), 1),
    (_ep("a", "b", "c", "d"), 1),
    (_ep("a", "b", "c", "d", azs="1212"), 2),
    (_ep("a", "b", "c", "d", "e", "f", azs="123123"), 3),
    (_ep("a", "b", "c", "d", "e", "f", "g"), 3),
    (_ep(*"abcdefghijkl", azs="123123444555"), 10),
])
def test_thanos_ketama_even_az_spread(nodes, rf):
    """TestKetamaHashringEvenAZSpread: replicas of foo=bar (tenant default-tenant) cover
    min(rf, zones) zones, each within one replica of the least used."""
    ring = KetamaRing(nodes, rf)
    row = ring.assign(hash_series("default-tenant", [encode_labels_key((("foo", "bar"),))]))[0]
    spread: dict[str, int] = {}
    for i in row.tolist():
        spread[ring.endpoints[i].az] = spread.get(ring.endpoints[i].az, 0) + 1
    assert len(spread) == min(rf, len({e.az for e in nodes}))
    assert max(spread.values()) - min(spread.values()) <= 1


@pytest.mark.parametrize("nodes,rf,n", [
    (_ep("a", "b", "c", "d", azs="1212"), 2, 1000),
    (_ep("a", "b", "c", "d"), 2, 1000),
    (_ep("a", "b", "c", "d", "e", "f", azs="123213"), 3, 10000),
    (_ep(*"abcdefghi", azs="123213123"), 2, 10000),
    (_ep(*"abcdefghi", azs="123213123"), 9, 10000),
])
def test_thanos_ketama_even_node_spread(nodes, rf, n):
    """TestKetamaHashringEvenNodeSpread: every node within 10% of its fair share."""
    h = hash_series("default-tenant", [encode_labels_key((("foo", str(i)),)) for i in range(n)])
    counts = np.bincount(KetamaRing(nodes, rf).assign(h).ravel(), minlength=len(nodes))
    optimal = n * rf // len(nodes)
    assert (np.abs(counts - optimal) / optimal < 0.1).all(), counts


def _reference_ketama(endpoints: list[Endpoint], rf: int, sections: int):
    """Thanos's ketama written out plainly (python xxhash, per-section walk) to cross-check the
    vectorised/C version on random rings with zones."""
    xxhash = pytest.importorskip("xxhash")
    secs = sorted((xxhash.xxh64_intdigest(f"{e.address}:{i}".encode()), k)
                  for k, e in enumerate(endpoints) for i in range(1, sections + 1))
    zones = {e.az for e in endpoints}
    table = []
    for i in range(len(secs)):
        reps: list[int] = []
        spread = dict.fromkeys(zones, 0)
        j = i - 1
        while len(reps) < rf:
            j = (j + 1) % len(secs)
            k = secs[j][1]
            if k in reps:
                continue
            az = endpoints[k].az
            if len(spread) > 1 and spread[az] > 0 and spread[az] > min(spread.values()):
                continue
            reps.append(k)
            spread[az] += 1
        table.append(reps)
    return [h for h, _ in secs], table


@pytest.mark.parametrize("seed", range(6))
def test_ketama_matches_a_plain_transcription_of_thanos(seed, keys):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 8))
    n_az = int(rng.integers(1, 4))
    nodes = [Endpoint(f"ingestor-{rng.integers(1000)}-{i}.svc:10901",
                      f"zone-{rng.integers(n_az)}" if n_az > 1 else "") for i in range(n)]
    # At most one replica per zone: Thanos's walk (and so the reference) always ends then.
    rf = int(rng.integers(1, min(n, 4, len({e.az for e in nodes})) + 1)) if n_az > 1 \
        else int(rng.integers(1, min(n, 4) + 1))
    _check_against_reference(nodes, rf, keys)


@pytest.mark.parametrize("azs,rf", [("112233", 5), ("111222", 4), ("1122334", 6), ("12", 2)])
def test_ketama_matches_the_transcription_with_more_replicas_than_zones(azs, rf, keys):
    nodes = [Endpoint(f"receive-{i}.receive.svc:10901", az) for i, az in enumerate(azs)]
    _check_against_reference(nodes, rf, keys)


def _check_against_reference(nodes: list[Endpoint], rf: int, keys) -> None:
    points, table = _reference_ketama(nodes, rf, 50)
    ring = KetamaRing(nodes, rf, sections_per_node=50)
    assert ring.points.tolist() == points
    assert ring.table.tolist() == table
    h = hash_series("tenant-x", keys[:2000])
    pos = np.searchsorted(np.array(points, dtype=np.uint64), h, side="left") % len(points)
    assert (ring.assign(h) == np.array(table)[pos]).all()


def test_ketama_zone_walk_that_thanos_never_finishes_still_places():
    """One node in each of two zones and three in a third, 5 replicas: Thanos's walk never ends
    (the third zone stays over-filled); here the zone rule yields after a full fruitless turn."""
    nodes = _ep("a", "b", "c", "d", "e", azs="12333")
    ring = KetamaRing(nodes, 5, sections_per_node=20)
    assert (np.sort(ring.table, axis=1) == np.arange(5)).all()


def test_hashmod_sorts_endpoints_by_address(keys):
    h = hash_series("t", keys[:500])
    ring = HashmodRing(_ep("c:1", "a:1", "b:1"), 2)
    assert [e.address for e in ring.endpoints] == ["a:1", "b:1", "c:1"]
    a = ring.assign(h)
    assert (a[:, 0] == (h % np.uint64(3)).astype(np.int32)).all()
    assert (a[:, 1] == ((h + np.uint64(1)) % np.uint64(3)).astype(np.int32)).all()


def test_first_hashring_without_tenants_takes_every_tenant():
    """Thanos walks hashrings in file order: a tenant-less hashring listed first wins, even for
    a tenant a later hashring names."""
    specs = parse_hashrings(json.dumps([_spec(["a:1"]), _spec(["b:1"], ["acme"])]))
    assert Hashrings(specs, "hashmod", 1).for_tenant("acme")[0].endpoints[0].address == "a:1"


@pytest.mark.parametrize("pattern,tenant,hit", [
    ("team-*", "team-a", True), ("team-*", "team-", True), ("team-*", "xteam-a", False),
    ("t?", "t1", True), ("t?", "t12", False), ("t[0-9]", "t5", True), ("t[^0-9]", "t5", False),
    ("t[^0-9]", "tx", True), ("t[!x]", "t!", True), ("a\\*", "a*", True), ("a\\*", "ab", False),
    ("*", "a/b", False), ("exact", "exact", True),
])
def test_glob_matcher_follows_go_filepath_match(pattern, tenant, hit):
    specs = parse_hashrings(json.dumps([_spec(["a:1"], [pattern], glob=True)]))
    assert (Hashrings(specs, "hashmod", 1).for_tenant(tenant) is not None) == hit


def test_exact_matcher_does_not_glob():
    specs = parse_hashrings(json.dumps([_spec(["a:1"], ["team-*"])]))
    rings = Hashrings(specs, "hashmod", 1)
    assert rings.for_tenant("team-a") is None and rings.for_tenant("team-*") is not None


def test_unknown_algorithm_falls_back_to_hashmod_as_thanos():
    specs = parse_hashrings(json.dumps([{"endpoints": ["b:1", "a:1"], "algorithm": "md5"}]))
    ring = Hashrings(specs, "ketama", 1).rings[0]
    assert isinstance(ring, HashmodRing) and ring.endpoints[0].address == "a:1"


def test_forced_refresh_rereads_a_file_whose_stamp_did_not_change(tmp_path):
    """Thanos's periodic re-read (--receive.hashrings-file-refresh-interval) catches an edit
    that left mtime, size and inode as they were."""
    f = tmp_path / "h.json"
    f.write_text(json.dumps([{"endpoints": ["a:1"]}]))
    os.utime(f, ns=(5, 5))
    hf = HashringsFile(f, "hashmod", 1)
    f.write_text(json.dumps([{"endpoints": ["b:1"]}]))
    os.utime(f, ns=(5, 5))
    assert not hf.refresh() and hf.rings.all_endpoints() == {"a:1"}
    assert hf.refresh(force=True) and hf.rings.all_endpoints() == {"b:1"}


def test_inline_hashrings_content_is_fixed():
    hf = HashringsFile(None, "hashmod", 1, content=json.dumps([{"endpoints": ["a:1"]}]))
    assert hf.rings.all_endpoints() == {"a:1"} and not hf.refresh(force=True)


def test_forwarded_requests_carry_each_series_own_replica_number():
    """As Thanos's router: one request per (endpoint, replica n) holding exactly the series whose
    replica n that endpoint is, so a Thanos router+ingestor receiving it (which re-routes by n)
    keeps every series where we sent it."""
    import asyncio

    import grpc

    from receiver.router import Forwarder, REMOTE_WRITE_METHOD
    got: list[tuple[str, int, list[bytes]]] = []

    def recorder(addr: str):
        async def remote_write(data: bytes, context) -> bytes:
            body, tenant, replica = _ringc.split_write(data)
            got.append((addr, replica, decode(body).keys))
            return b""
        service, method = REMOTE_WRITE_METHOD.strip("/").split("/")
        return grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(
            remote_write, request_deserializer=None, response_serializer=None)})

    async def go():
        servers, addrs = [], []
        for _ in range(3):
            srv = grpc.aio.server()
            port = srv.add_insecure_port("127.0.0.1:0")
            addr = f"127.0.0.1:{port}"
            srv.add_generic_rpc_handlers((recorder(addr),))
            await srv.start()
            servers.append(srv)
            addrs.append(addr)
        rings = Hashrings(parse_hashrings(json.dumps([{"endpoints": addrs}])), "ketama", 3)
        # The recording servers are plain grpcio, which cannot read snappy: forward uncompressed.
        router = Router(lambda: rings, Forwarder(timeout_s=10, compression="none"))
        raw = _request(60)
        try:
            assert (await router.write("t", raw, decode(raw))).status == 200
            await asyncio.sleep(0.5)  # replicas beyond the quorum finish in the background
        finally:
            await router.close()
            for s in servers:
                await s.stop(None)
        return rings

    rings = asyncio.run(go())
    ring = rings.rings[0]
    addr_of = [e.address for e in ring.endpoints]
    seen = 0
    for addr, replica, keys in got:
        assert 1 <= replica <= 3
        a = ring.assign(hash_series("t", keys))
        assert all(addr_of[i] == addr for i in a[:, replica - 1].tolist()), (addr, replica)
        seen += len(keys)
    assert seen == 60 * 3


def test_glob_matching_is_linear_time_on_hostile_tenant_ids():
    """A tenant ID is client input: ``*a*a*a*a*a*a*a*b`` against 150 a's made a backtracking
    regex run for hours, hanging the router. Run in a child process so a regression fails on
    the timeout instead of hanging the suite."""
    import subprocess
    import sys
    code = ("import json; from receiver.hashring import Hashrings, parse_hashrings; "
            "s = parse_hashrings(json.dumps([{'endpoints': ['a:1'], 'tenants': ['*a*a*a*a*a*a*a*b'], "
            "'tenant_matcher_type': 'glob'}])); "
            "print(Hashrings(s, 'hashmod', 1).for_tenant('a' * 150))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stderr
