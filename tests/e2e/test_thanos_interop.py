"""promring against the real Thanos binary (built by scripts/peers.sh from the Go module proxy):

- a Thanos receive router with default flags (so its writes are snappy-compressed gRPC)
  forwards into promring ingestors, and every sample lands;
- a promring router (snappy by default) forwards into a Thanos ingestor, and every sample lands;
- a Thanos querier over a promring ingestor + promring store gateway and a promring querier over
  a Thanos ingestor + Thanos store gateway give the same answers to the differential query set.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import requests

from harness import (ServerProcess, free_port, promring_cmd, query_process, receive_process,
                     wait_for_blocks,
                     start_process, stop_process)
from peers import peer
from rw import push, raw_samples
from storeapi import hints_pb2, rpc_pb2, rpc_pb2_grpc, types_pb2
from test_promql_differential import (INSTANCES, INTERVAL_MS, ROUNDS, compare_all,
                                      compliance_queries, make_data, own_queries)

STARTUP_S = 120.0  # generous: the suite shares two cores with everything else
FS_BUCKET = "type: FILESYSTEM\nconfig:\n  directory: {dir}\n"


def thanos(workdir: Path, name: str, component: str, *args: str) -> ServerProcess:
    """``thanos <component>`` on fresh loopback ports; ready when /-/ready answers 200."""
    ports = {"grpc": free_port(), "http": free_port()}
    argv = [peer("thanos"), component, f"--grpc-address=127.0.0.1:{ports['grpc']}",
            f"--http-address=127.0.0.1:{ports['http']}", "--log.level=warn"]
    if component == "receive":
        ports["remote_write"], ports["capnproto"] = free_port(), free_port()
        argv += [f"--remote-write.address=127.0.0.1:{ports['remote_write']}",
                 f"--receive.capnproto-address=127.0.0.1:{ports['capnproto']}",
                 f"--tsdb.path={workdir / name / 'tsdb'}"]
    return ServerProcess(argv + list(args), workdir, name, ports,
                         [f"http://127.0.0.1:{ports['http']}/-/ready"])


def rw_url(proc: ServerProcess) -> str:
    return proc.url("remote_write", "/api/v1/receive")


def push_all(url: str, data, t0: int) -> None:
    """Round by round in time order, as a scraper would."""
    for lo in range(0, ROUNDS, 25):
        batch = []
        for lbls, ts, vals in data:
            sel = [(t, v) for t, v in zip(ts, vals)
                   if t0 + lo * INTERVAL_MS <= t < t0 + (lo + 25) * INTERVAL_MS]
            if sel:
                batch.append((lbls, [t for t, _ in sel], [v for _, v in sel]))
        r = push(url, batch)
        assert r.status_code in (200, 204), (url, r.status_code, r.text)


def expected_samples(data) -> dict:
    """{labels: [(t seconds, value)]} of what was pushed."""
    return {tuple(sorted(lbls)): [(t / 1000, float(v)) for t, v in zip(ts, vs)]
            for lbls, ts, vs in data}


def landed(api: str, t_end_s: float) -> dict:
    """Every raw sample of job="demo" in the last hour, keyed by labels without tenant_id."""
    got = raw_samples(api, '{job="demo"}', t_end_s, "1h")
    return {tuple(p for p in k if p[0] != "tenant_id"): [(float(t), float(v)) for t, v in pts]
            for k, pts in got.items()}


def _times(now_ms: int) -> tuple[int, int]:
    base = now_ms // 60_000 * 60_000 - ROUNDS * INTERVAL_MS // 60_000 * 60_000
    return base, base + 3_300


def _wait_equal(fn, want, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_thanos_router_with_default_flags_forwards_every_sample_into_promring(tmp_path):
    base, t0 = _times(int(time.time() * 1000))
    data = make_data(t0)
    ings = [receive_process(tmp_path, f"ing{i}").start(STARTUP_S) for i in range(2)]
    procs: list = list(ings)
    try:
        ring = tmp_path / "hashrings.json"
        ring.write_text(json.dumps([{"hashring": "default",
                                     "endpoints": [i.grpc for i in ings]}]))
        router = thanos(tmp_path, "thanos-router", "receive", f"--receive.hashrings-file={ring}",
                        '--label=receive="router"').start(STARTUP_S)
        procs.append(router)
        push_all(rw_url(router), data, t0)
        query = query_process(tmp_path, "query", [i.grpc for i in ings]).start(STARTUP_S)
        procs.append(query)
        api = query.url("http", "/api/v1")
        want = expected_samples(data)
        got = _wait_equal(lambda: landed(api, (base + 50 * 60_000) / 1000), want)
        assert set(got) == set(want), "series missing or extra"
        assert got == want
        # Both ingestors took a share (the router spread series, not a single fallback).
        for ing in ings:
            text = requests.get(ing.url("http", "/metrics"), timeout=10).text
            heads = [ln for ln in text.splitlines() if ln.startswith("prometheus_tsdb_head_series{")]
            assert heads and float(heads[0].split()[-1]) > 0, ing.log_text()[-2000:]
    finally:
        for p in reversed(procs):
            p.stop()


def test_promring_router_forwards_every_sample_into_a_thanos_ingestor(tmp_path):
    base, t0 = _times(int(time.time() * 1000))
    data = make_data(t0)
    ing = thanos(tmp_path, "thanos-ing", "receive", '--label=receive_replica="0"').start(STARTUP_S)
    procs: list = [ing]
    try:
        ring = tmp_path / "hashrings.json"
        ring.write_text(json.dumps([{"hashring": "default", "endpoints": [f"127.0.0.1:{ing.ports['grpc']}"]}]))
        router = receive_process(tmp_path, "router", "--receive.hashrings-file", str(ring),
                                 router_only=True).start(STARTUP_S)
        procs.append(router)
        push_all(router.url("remote_write", "/api/v1/receive"), data, t0)
        tq = thanos(tmp_path, "thanos-query", "query",
                    f"--endpoint=127.0.0.1:{ing.ports['grpc']}").start(STARTUP_S)
        procs.append(tq)
        api = tq.url("http", "/api/v1")
        want = {tuple(sorted(k + (("receive_replica", "0"),))): pts
                for k, pts in expected_samples(data).items()}
        got = _wait_equal(lambda: landed(api, (base + 50 * 60_000) / 1000), want)
        assert set(got) == set(want), "series missing or extra"
        assert got == want
    finally:
        for p in reversed(procs):
            p.stop()


def test_thanos_and_promring_queriers_agree_over_each_others_components(tmp_path):
    base, t0 = _times(int(time.time() * 1000))
    data = make_data(t0)
    head = [s for s in data if dict(s[0])["instance"] in INSTANCES[:2]]
    old = [s for s in data if dict(s[0])["instance"] not in INSTANCES[:2]]
    procs: list = []
    popen: list = []
    try:
        # Blocks: a promring ingestor writes `old` and ships it on shutdown; Thanos's store
        # gateway reads a copy of that bucket, promring's store gateway the original.
        bucket_a, bucket_b = tmp_path / "bucket-a", tmp_path / "bucket-b"
        cfg_a = tmp_path / "bucket-a.yml"
        cfg_a.write_text(FS_BUCKET.format(dir=bucket_a))
        cfg_b = tmp_path / "bucket-b.yml"
        cfg_b.write_text(FS_BUCKET.format(dir=bucket_b))
        # Blocks are cut on the 1.5-range schedule (not on shutdown): with 10-minute blocks the
        # 50 minutes of `old` give blocks up to ~35 minutes in; the rest stays in that head, so
        # neither querier below sees it and both answer alike.
        shipper = receive_process(tmp_path, "shipper", "--objstore.config-file", str(cfg_a),
                                  "--label", 'store="blocks"', "--tsdb.min-block-duration", "10m",
                                  "--tsdb.max-block-duration", "10m").start(STARTUP_S)
        push_all(shipper.url("remote_write", "/api/v1/receive"), old, t0)
        blocks = wait_for_blocks(tmp_path / "shipper" / "default-tenant", t0 + 29 * 60_000)
        deadline = time.monotonic() + 60
        while not all((bucket_a / b.name / "meta.json").exists() for b in blocks):
            assert time.monotonic() < deadline, "blocks were not shipped"
            time.sleep(0.2)
        assert shipper.stop() == 0, shipper.log_text()[-2000:]
        shutil.copytree(bucket_a, bucket_b)

        # Heads: the same `head` series into a promring and a Thanos ingestor.
        p_ing = receive_process(tmp_path, "p-ing", "--label", 'store="head"').start(STARTUP_S)
        procs.append(p_ing)
        t_ing = thanos(tmp_path, "t-ing", "receive", '--label=store="head"').start(STARTUP_S)
        procs.append(t_ing)
        push_all(p_ing.url("remote_write", "/api/v1/receive"), head, t0)
        push_all(rw_url(t_ing), head, t0)

        t_store = thanos(tmp_path, "t-store", "store", f"--objstore.config-file={cfg_b}",
                         f"--data-dir={tmp_path / 't-store-data'}").start(STARTUP_S)
        procs.append(t_store)
        # promring store gateway over bucket A, and a promring querier over the Thanos pair.
        sg, sh = free_port(), free_port()
        popen.append(start_process(promring_cmd() + [
            "store", "--data-dir", str(tmp_path / "p-store-data"), "--objstore.config-file",
            str(cfg_a), "--grpc-address", f"127.0.0.1:{sg}", "--http-address", f"127.0.0.1:{sh}"],
            f"http://127.0.0.1:{sh}/-/ready", tmp_path / "p-store.log"))  # waits 60 s
        p_store_grpc = f"127.0.0.1:{sg}"
        assert _hinted_blocks(p_store_grpc) == sorted(p.parent.name for p in bucket_a.glob("*/meta.json"))
        t_query = thanos(tmp_path, "t-query", "query", f"--endpoint={p_ing.grpc}",
                         f"--endpoint={p_store_grpc}").start(STARTUP_S)
        procs.append(t_query)
        p_query = query_process(tmp_path, "p-query", [f"127.0.0.1:{t_ing.ports['grpc']}",
                                                      f"127.0.0.1:{t_store.ports['grpc']}"]).start(STARTUP_S)
        procs.append(p_query)
        apis = {"thanos": t_query.url("http", "/api/v1"), "promring": p_query.url("http", "/api/v1")}

        sess = requests.Session()
        # (25 minutes in: `old` is in the shipped blocks there, `head` in both ingestors)
        probe = {"query": 'count({job="demo"})', "time": (base + 25 * 60_000 + 17_000) / 1000}
        probe_ms = base + 25 * 60_000 + 17_000
        # series with a sample in the 5-minute lookback window before the probe
        want = str(sum(1 for _, ts, _ in data if any(probe_ms - 300_000 < t <= probe_ms for t in ts)))

        def counts():
            return [sess.get(f"{a}/query", params=probe, timeout=30).json()["data"]["result"]
                    for a in apis.values()]
        got = _wait_equal(lambda: [r[0]["value"][1] if r else None for r in counts()],
                          [want, want], timeout=90)
        assert got == [want, want], f"not all data visible: {got}"

        instants = [(base + m * 60_000 + 17_000) / 1000 for m in (30, 36, 41, 45, 49)]
        at_s = int(base / 1000) + 35 * 60 + 17
        # Not resets(): Thanos's querier answers 0 for a window holding a counter reset, over its
        # own receive just the same (seen by hand with v0.42.4), where promring answers 1 as
        # Prometheus does; that is Thanos's query path, not the StoreAPI under test here.
        queries = [q for q in dict.fromkeys(compliance_queries() + own_queries(at_s))
                   if "resets(" not in q]
        start, end = (base + 30 * 60_000 + 17_000) / 1000, (base + 49 * 60_000 + 17_000) / 1000
        failures, n_instant, n_range = compare_all(sess, apis, queries, instants, start, end,
                                                   instant_offsets=(0,))
        n = n_instant + n_range
        print(f"thanos interop differential: {len(queries)} queries, {n} evaluations, "
              f"{len(failures)} mismatches")
        assert len(queries) >= 200
        assert not failures, f"{len(failures)} of {n} differ:\n" + "\n".join(failures[:40])
    finally:
        for p in reversed(procs):
            p.stop()
        for p in popen:
            stop_process(p)


def _hinted_blocks(address: str) -> list[str]:
    """Block IDs in the SeriesResponseHints a store gateway sends when asked for them."""
    req = rpc_pb2.SeriesRequest(min_time=0, max_time=2**62, matchers=[types_pb2.LabelMatcher(
        type=types_pb2.LabelMatcher.EQ, name="job", value="demo")], skip_chunks=True)
    req.hints.Pack(hints_pb2.SeriesRequestHints())
    with grpc.insecure_channel(address) as ch:
        frames = list(rpc_pb2_grpc.StoreStub(ch).Series(req, timeout=30))
    hints = hints_pb2.SeriesResponseHints()
    assert frames[-1].WhichOneof("result") == "hints" and frames[-1].hints.Unpack(hints)
    return sorted(b.id for b in hints.queried_blocks)
