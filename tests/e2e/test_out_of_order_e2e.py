"""--tsdb.out-of-order.time-window on a real ``promring receive``: late samples inside the
window are acknowledged and served in order, once, through a querier; those outside get 409;
they survive kill -9, and the block cut writes them into ``from-out-of-order`` blocks that
promtool reads."""
from __future__ import annotations

import json
import re
import subprocess
import time

import requests

from peers import peer
from harness import query_process, receive_process, stop_process, store_and_query
from receiver.remotewrite import encode_histogram_write_request, snappy_compress
from receiver.tsdb.histogram import to_proto_bytes
from rw import HEADERS, push, raw_samples
from test_blocks import blocks_dump, needs_promtool
from test_native_histograms_e2e import int_hist

MIN = 60_000
NAME = "ooo_metric"
LBLS = (("__name__", NAME), ("job", "late"))


def served(api: str, t_end_ms: int) -> list[tuple[int, float]]:
    got = raw_samples(api, NAME, t_end_ms / 1000, "2h")
    assert len(got) <= 1, got
    return [(int(round(float(t) * 1000)), float(v)) for pts in got.values() for t, v in pts]


def wait_served(api: str, t_end_ms: int, want: list[tuple[int, float]]) -> None:
    """The querier's answer once it is ``want`` (bounded: a restarted ingestor is found again
    by the querier's endpoint checks)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            got = served(api, t_end_ms)
        except Exception:  # noqa: BLE001 -- the store may be reconnecting
            got = None
        if got == want or time.monotonic() > deadline:
            assert got == want
            return
        time.sleep(0.3)


def write(url: str, pts: list[tuple[int, float]]) -> int:
    return push(url, [(LBLS, [t for t, _ in pts], [v for _, v in pts])]).status_code


def write_hists(url: str, pts: list[tuple[int, int]]) -> int:
    """Native histogram samples ``int_hist(i)`` at t of series ``ooo_hist``."""
    body = encode_histogram_write_request(
        [((("__name__", "ooo_hist"),), [to_proto_bytes(t, int_hist(i)) for t, i in pts])])
    return requests.post(url, data=snappy_compress(body), headers=HEADERS, timeout=30).status_code


def hist_counts(api: str, ts: list[int]) -> list[float | None]:
    """histogram_count(ooo_hist) at each t (the sample at exactly t, given one per minute)."""
    out = []
    for t in ts:
        r = requests.get(f"{api}/query", params={"query": "histogram_count(ooo_hist)",
                                                 "time": t / 1000}, timeout=30).json()
        res = r["data"]["result"]
        out.append(float(res[0]["value"][1]) if res else None)
    return out


@needs_promtool
def test_late_samples_acknowledged_served_durable_and_cut_into_blocks(tmp_path):
    t0 = (int(time.time() * 1000) // (10 * MIN) - 6) * 10 * MIN  # an hour ago, 10m-aligned
    bucket_yaml = f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n"
    (tmp_path / "bucket.yml").write_text(bucket_yaml)
    recv = receive_process(tmp_path, "recv", "--tsdb.min-block-duration", "10m",
                           "--tsdb.out-of-order.time-window", "30m",
                           "--objstore.config-file", str(tmp_path / "bucket.yml")).start()
    query = query_process(tmp_path, "query", [recv.grpc]).start()
    try:
        url = recv.url("remote_write", "/api/v1/receive")
        api = query.url("http", "/api/v1")
        t_end = t0 + 60 * MIN
        in_order = [(t0 + i * MIN, float(i)) for i in range(13)]  # newest: t0 + 12m
        assert write(url, in_order) == 200
        # Behind the series' newest, before and inside the in-order window: accepted.
        late = [(t0 + 30_000, 100.0), (t0 + 90_000, 101.0), (t0 + 11 * MIN + 30_000, 102.0)]
        assert write(url, late) == 200
        # Older than the newest minus the window: too old.
        r = push(url, [(LBLS, [t0 + 12 * MIN - 31 * MIN], [1.0])])
        assert r.status_code == 409 and "too old" in r.text
        # The same timestamp again: with another value refused, with the same accepted.
        assert write(url, [(t0 + 30_000, 7.0)]) == 409
        assert write(url, [(t0 + 30_000, 100.0)]) == 200
        want = sorted(in_order + late)
        wait_served(api, t_end, want)
        # Native histograms the same way (Prometheus 3 takes them late too).
        assert write_hists(url, [(t0 + i * MIN, i) for i in range(13)]) == 200
        assert write_hists(url, [(t0 + 30_000, 100), (t0 + 90_000, 101)]) == 200
        assert write_hists(url, [(t0 + 12 * MIN - 31 * MIN, 102)]) == 409
        hist_at = [t0, t0 + 30_000, t0 + MIN, t0 + 90_000]
        hist_want = [float(int_hist(i).count) for i in (0, 100, 1, 101)]
        assert hist_counts(api, hist_at) == hist_want
        metrics = requests.get(recv.url("http", "/metrics"), timeout=10).text
        assert ('prometheus_tsdb_head_out_of_order_samples_appended_total{tenant="default-tenant",'
                'type="float"} 3.0') in metrics

        recv.kill9()
        recv.start()
        wait_served(api, t_end, want)  # replayed from the WAL, still exactly once
        assert hist_counts(api, hist_at) == hist_want

        # More in-order samples make the head span over 1.5 block ranges; the cut runs in the
        # first lifecycle round of the next start.
        more = [(t0 + i * MIN, float(i)) for i in range(13, 21)]
        assert write(url, more) == 200
        want = sorted(want + more)
        recv.kill9()
        recv.start()
        tenant_dir = tmp_path / "recv" / "default-tenant"
        deadline = time.monotonic() + 30
        while True:
            metas = {p.parent: json.loads(p.read_text()) for p in tenant_dir.glob("*/meta.json")}
            ooo = [d for d, m in metas.items()
                   if m["compaction"].get("hints") == ["from-out-of-order"]]
            if len(ooo) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(metas[d]["minTime"] for d in ooo) == [t0, t0 + 10 * MIN]
        for d in ooo:
            assert metas[d]["thanos"]["labels"] == {"tenant_id": "default-tenant"}
            subprocess.run(["promtool", "tsdb", "analyze", str(tenant_dir), d.name], check=True,
                           capture_output=True)
        dump = blocks_dump(ooo, tmp_path / "dump")
        assert dump == {tuple(sorted(LBLS)): sorted(late)}  # 2.42 does not print histograms
        # Prometheus 3's promtool does: the late ones, and the first in-order ones, which came
        # older than the head's in-order window (t0 + 7m) for a new series: late too.
        text = subprocess.run([peer("promtool"), "tsdb", "dump", str(tmp_path / "dump")],
                              check=True, capture_output=True, text=True).stdout
        got_hists = sorted((int(line.rsplit(" ", 1)[1]), float(re.search(r"\{count:([^,]+),", line)[1]))
                           for line in text.splitlines() if line.startswith('{__name__="ooo_hist"}'))
        assert got_hists == sorted([(t0 + i * MIN, float(int_hist(i).count)) for i in range(7)]
                                   + [(t0 + 30_000, float(int_hist(100).count)),
                                      (t0 + 90_000, float(int_hist(101).count))])
        wait_served(api, t_end, want)  # in-order block + out-of-order blocks + head: once each
        assert hist_counts(api, hist_at) == hist_want
        # Shipped, the overlapping blocks reach a store gateway; its querier merges them too.
        deadline = time.monotonic() + 30
        while not all((tmp_path / "bucket" / d.name / "meta.json").exists() for d in metas):
            assert time.monotonic() < deadline, "blocks were not shipped"
            time.sleep(0.2)
        (tmp_path / "sg").mkdir()
        procs, store_api = store_and_query(tmp_path / "sg", bucket_yaml)
        try:
            wait_served(store_api, t0 + 20 * MIN - 1,
                        sorted([p for p in in_order if p[0] < t0 + 10 * MIN] + late))
        finally:
            for p in procs:
                stop_process(p)
        # The cut late samples are not replayed into the head again.
        recv.kill9()
        recv.start()
        wait_served(api, t_end, want)
    finally:
        query.stop()
        recv.stop()
