"""Native histograms end to end: remote write -> head/WAL -> blocks -> StoreAPI -> PromQL -> JSON.

The same pushes go to Debian's Prometheus 2.42 (native histograms on, remote-write receiver on),
and every answer must match it; then the data has to survive a ``kill -9`` and a SIGTERM (WAL
replay both times) and be cut into blocks that Prometheus 2.42 itself must be able to read.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pytest
import requests

from harness import PrometheusProcess, wait_for_blocks
from receiver.remotewrite import encode_histogram_write_request, snappy_compress
from receiver.tsdb.histogram import Hist, to_proto_bytes
from rw import HEADERS
from rw import push as push_floats

needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="Debian's prometheus package is not installed")

STEP = 15_000


def int_hist(i: int) -> Hist:
    """A growing integer histogram (schema 0, buckets 2^-1..2^3 and -2^1..), deltas as sent."""
    p = [1 + i, 2 * i, 3 + i, i // 2]
    n = [i, 1]
    zc = i // 3
    return Hist(False, 0, 2.0 ** -128, sum(p) + sum(n) + zc, zc, 1.25 * i + 0.5,
                ((-1, 2), (1, 2)), _deltas(p), ((0, 2),), _deltas(n))


def float_hist(i: int) -> Hist:
    p = [0.5 * i, 1.5 * i + 1, 0.25]
    return Hist(True, 1, 0.001, sum(p) + 0.5, 0.5, 3.5 * i, ((0, 3),), p, (), [])


def custom_hist(i: int) -> Hist:  # for promring only: 2.42 predates custom buckets
    p = [i, 2 * i, 1]
    return Hist(False, -53, 0.0, sum(p), 0, 2.0 * i, ((0, 3),), _deltas(p), (), [], 0,
                (0.1, 0.5))


def _deltas(xs: list[int]) -> list[int]:
    return [x - (xs[k - 1] if k else 0) for k, x in enumerate(xs)]


SERIES = {"h": int_hist, "hf": float_hist}


def push(url: str, t0: int, lo: int, hi: int, series=SERIES) -> None:
    body = encode_histogram_write_request(
        ((("__name__", name), ("job", "nh")), [to_proto_bytes(t0 + i * STEP, fn(i)) for i in range(lo, hi)])
        for name, fn in series.items())
    r = requests.post(url, data=snappy_compress(body), headers=HEADERS, timeout=30)
    assert r.status_code in (200, 204), r.text


def q(api: str, query: str, t_s: float):
    r = requests.get(f"{api}/query", params={"query": query, "time": t_s}, timeout=30)
    assert r.status_code == 200, r.text
    res = r.json()["data"]["result"]
    for s in res:
        s["metric"].pop("tenant_id", None)
    return sorted(res, key=lambda s: sorted(s["metric"].items()))


QUERIES = ["h", "hf", "h[1m]", "hf[2m]", "histogram_count(h)", "histogram_sum(hf)",
           "histogram_quantile(0.9, rate(h[1m]))", "histogram_quantile(0.5, rate(hf[1m]))",
           "histogram_fraction(0, 2, h)", "sum(rate(h[2m]))", "histogram_count(increase(h[5m]))"]


def answers(api: str, t_s: float) -> dict:
    return {query: q(api, query, t_s) for query in QUERIES}


def _close(a, b) -> bool:
    """Equal JSON, with float strings compared to 1e-9 relative (rate() sums differ in ulps)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except ValueError:
            return False
    return a == b


# Prometheus 2.42 interpolates linearly inside exponential buckets; Prometheus 3 (and our
# engine) exponentially. Against 2.42 these only have to land in the same bucket.
QUANTILES = {"histogram_quantile(0.9, rate(h[1m]))": 0, "histogram_quantile(0.5, rate(hf[1m]))": 1}


def _bucket(v: str, schema: int) -> int:
    return math.ceil(math.log2(float(v)) * 2 ** schema)


def assert_same(got: dict, want: dict, exact: bool = False) -> None:
    for query in QUERIES:
        if query in QUANTILES and not exact:
            g, w = got[query], want[query]
            assert len(g) == len(w) == 1 and g[0]["metric"] == w[0]["metric"], (query, g, w)
            assert g[0]["value"][0] == w[0]["value"][0]
            sch = QUANTILES[query]
            assert _bucket(g[0]["value"][1], sch) == _bucket(w[0]["value"][1], sch), (query, g, w)
            continue
        assert _close(got[query], want[query]), (query, got[query], want[query])


@needs_prometheus
def test_native_histograms_match_prometheus_and_survive_restarts(promring_up, tmp_path: Path):
    prom = PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1h\n",
                             "--enable-feature=native-histograms",
                             "--web.enable-remote-write-receiver").start()
    try:
        pr = promring_up(tmp_path / "data", "--tsdb.min-block-duration", "2m")
        now = int(time.time() * 1000)
        t0 = now - 40 * STEP - 60_000
        for lo in range(0, 40, 5):
            for url in (pr.write_url, prom.api.replace("/api/v1", "/api/v1/write")):
                push(url, t0, lo, lo + 5)
        # 7 s past a sample: no range boundary falls on a sample (2.42 ranges are left-closed,
        # Prometheus 3's, which the engine follows, left-open)
        t_end = (t0 + 39 * STEP + 7_000) / 1000
        want = answers(prom.api, t_end)
        assert want["h"] and "histogram" in want["h"][0] and want["h[1m]"][0]["histograms"]
        assert want["histogram_quantile(0.9, rate(h[1m]))"]
        mine = answers(pr.api, t_end)
        assert_same(mine, want)
        # also at a time in between, and a range query
        assert_same(answers(pr.api, t_end - 200), answers(prom.api, t_end - 200))
        rq = {"query": "histogram_count(rate(h[1m]))", "start": t_end - 300, "end": t_end, "step": 30}
        got_r = requests.get(f"{pr.api}/query_range", params=rq, timeout=30).json()["data"]["result"]
        want_r = requests.get(f"{prom.api}/query_range", params=rq, timeout=30).json()["data"]["result"]
        for s in got_r:
            s["metric"].pop("tenant_id", None)
        assert _close(got_r, want_r)

        # kill -9: everything acknowledged comes back from the WAL.
        pr.kill9()
        pr.start()
        assert_same(answers(pr.api, t_end), mine, exact=True)

        # SIGTERM: no flush, the head comes back from the WAL and answers the same.
        assert pr.stop() == 0
        pr.start()
        assert_same(answers(pr.api, t_end), mine, exact=True)

        # Blocks are cut on schedule: a later sample of another series makes the head span
        # more than 1.5 block ranges (2m here), so every range holding h is cut and answers.
        marker = (("__name__", "zz_marker"), ("job", "marker"))
        assert push_floats(pr.write_url, [(marker, [now + 5 * 60_000], [1.0])]).status_code == 200
        blocks = wait_for_blocks(tmp_path / "data" / "receive" / "default-tenant",
                                 t0 + 39 * STEP)
        assert_same(answers(pr.api, t_end), mine, exact=True)

        # Prometheus 2.42 itself reads our histogram chunks from those blocks.
        prom2 = PrometheusProcess(tmp_path / "prom2", "global:\n  scrape_interval: 1h\n",
                                  "--enable-feature=native-histograms")
        (prom2.dir / "tsdb").mkdir(parents=True)
        for b in blocks:
            shutil.copytree(b, prom2.dir / "tsdb" / b.name)
        prom2.start()
        try:
            assert_same(answers(prom2.api, t_end), want)
        finally:
            prom2.stop()

    finally:
        prom.stop()


def test_custom_bucket_histograms_and_mixed_series(promring_up, tmp_path: Path):
    """Schema -53 (custom buckets) round-trips; a histogram behind a float is refused (409)."""
    pr = promring_up(tmp_path / "data")
    now = int(time.time() * 1000)
    t0 = now - 20 * STEP
    push(pr.write_url, t0, 0, 10, {"hc": custom_hist})
    got = q(pr.api, "hc", (t0 + 9 * STEP) / 1000)
    assert got[0]["histogram"][1] == {"count": "28", "sum": "18",
                                      "buckets": [[0, "-Inf", "0.1", "9"], [0, "0.1", "0.5", "18"],
                                                  [0, "0.5", "+Inf", "1"]]}
    assert q(pr.api, "histogram_count(hc)", (t0 + 9 * STEP) / 1000)[0]["value"][1] == "28"
    # the newest sample again: an exact duplicate is accepted silently, a changed one refused,
    # an older one is out of order
    push(pr.write_url, t0, 9, 10, {"hc": custom_hist})
    body = encode_histogram_write_request(
        [((("__name__", "hc"), ("job", "nh")), [to_proto_bytes(t0 + 8 * STEP, custom_hist(8))])])
    r = requests.post(pr.write_url, data=snappy_compress(body), headers=HEADERS, timeout=30)
    assert r.status_code == 409 and "out of order" in r.text
    body = encode_histogram_write_request(
        [((("__name__", "hc"), ("job", "nh")), [to_proto_bytes(t0 + 9 * STEP, custom_hist(3))])])
    r = requests.post(pr.write_url, data=snappy_compress(body), headers=HEADERS, timeout=30)
    assert r.status_code == 409 and "duplicate" in r.text
    pr.stop()
    pr.start()
    assert q(pr.api, "histogram_count(hc)", (t0 + 9 * STEP) / 1000)[0]["value"][1] == "28"


def _reference_prometheus(which: str) -> str:
    if which == "2.42":
        if shutil.which("prometheus") is None:
            pytest.skip("Debian's prometheus package is not installed")
        return "prometheus"
    from peers import peer
    return peer("prometheus")


@pytest.mark.parametrize("which", ["2.42", "3"])
def test_chunks_are_bit_identical_to_prometheus(tmp_path: Path, which: str):
    """Prometheus's own head chunks (taken out through a TSDB snapshot) equal ours. The samples
    straddle a 2 h chunk-range boundary, so the chunk cut there -- whose header Prometheus writes
    as "unknown", not "not a reset" -- is always compared (it once failed 2 runs in 5, whenever
    the wall clock put a boundary inside the data)."""
    from receiver.tsdb.block import BlockReader
    from receiver.tsdb.histogram import cut_chunks
    from receiver.tsdb.labels import Matcher, MatchType

    prom = PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1h\n",
                             "--enable-feature=native-histograms", "--web.enable-admin-api",
                             "--web.enable-remote-write-receiver")
    prom.args[0] = _reference_prometheus(which)
    prom.start()
    block_range = 2 * 3600 * 1000
    # the last boundary before now: a fresh head takes a first request from any past time, and
    # Prometheus 3 refuses samples too far in the future
    boundary = int(time.time() * 1000) // block_range * block_range
    try:
        t0 = boundary - 10 * STEP
        push(prom.api.replace("/api/v1", "/api/v1/write"), t0, 0, 30)
        r = requests.post(f"{prom.api}/admin/tsdb/snapshot", timeout=60)
        assert r.status_code == 200, r.text
        snap = prom.dir / "tsdb" / "snapshots" / r.json()["data"]["name"]
        (block,) = [m.parent for m in snap.rglob("meta.json")]
        with BlockReader(block) as b:
            for name, fn in SERIES.items():
                (_, theirs), = b.series(0, 1 << 62, [Matcher(MatchType.EQ, "__name__", name)])
                ours = cut_chunks([(t0 + i * STEP, fn(i)) for i in range(30)])
                assert len(ours) == 2
                assert [(a, z, bytes(c), c.encoding) for a, z, c in theirs] == \
                       [(a, z, bytes(c), c.encoding) for a, z, c in ours]
    finally:
        prom.stop()
