"""The write path through a real ``promring up``: bad input gets a clear 4xx and loses nothing,
and acknowledged samples survive ``kill -9``."""
from __future__ import annotations

import random
import threading
import time

import cramjam
import requests

from rw import HEADERS, body, push, raw_samples

M = "__name__"


def series(name: str, n: int, t0: int, step: int = 1000, **labels):
    lbls = tuple(sorted({M: name, "job": "t", **labels}.items()))
    return (lbls, [t0 + i * step for i in range(n)], [float(i) for i in range(n)])


def test_bad_input_gets_4xx_and_loses_nothing(promring_up):
    pr = promring_up()
    url = pr.write_url
    t0 = 1_700_000_000_000
    assert push(url, [series("before", 10, t0)]).status_code == 200

    bad = {
        "undecodable snappy": (b"\xff\xff\xff\xffgarbage", HEADERS, 400),
        "undecodable protobuf": (bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff")), HEADERS, 400),
        "wrong content-encoding": (body([series("x", 1, t0)]), {**HEADERS, "Content-Encoding": "gzip"}, 415),
    }
    for what, (data, headers, code) in bad.items():
        r = requests.post(url, data=data, headers=headers, timeout=10)
        assert r.status_code == code, (what, r.status_code, r.text)
        assert r.text.strip(), what

    # Label-set errors are conflicts (409), yet valid series in the same request are appended.
    good = series("mixed_ok", 5, t0)
    for what, lbls in {
        "unsorted": (("job", "t"), (M, "unsorted")),
        "duplicate": ((M, "dup"), ("a", "1"), ("a", "2")),
        "empty name": ((M, "empty"), ("", "v")),
        "empty value": ((M, "emptyval"), ("a", "")),
        "no labels": (),
    }.items():
        r = push(url, [good, (lbls, [t0], [1.0])])
        assert r.status_code == 409, (what, r.status_code, r.text)
        assert "label" in r.text, (what, r.text)

    # Out-of-order and duplicate-timestamp samples are conflicts; the rest is appended.
    r = push(url, [series("ooo", 5, t0 + 10_000), series("ooo", 3, t0)])
    assert r.status_code == 409 and "out of order" in r.text, r.text
    dup = (series("ooo", 1, t0 + 14_000)[0], [t0 + 14_000], [99.0])
    r = push(url, [dup])
    assert r.status_code == 409 and "duplicate" in r.text, r.text
    # Resending a series' newest sample unchanged is not an error; older ones are out of order,
    # as in Prometheus and Thanos.
    lbls, ts, vals = series("before", 10, t0)
    assert push(url, [(lbls, ts[-1:], vals[-1:])]).status_code == 200
    assert push(url, [(lbls, ts, vals)]).status_code == 409

    too_big = requests.post(url, data=b"\0" * (40 << 20), headers=HEADERS, timeout=30)
    assert too_big.status_code == 413, too_big.status_code
    assert requests.get(url, timeout=10).status_code == 405
    assert requests.get(f"http://127.0.0.1:{pr.rw_port}/-/ready").status_code == 200

    assert push(url, [series("after", 10, t0 + 20_000)]).status_code == 200
    t_q = (t0 + 30_000) / 1000
    got = raw_samples(pr.api, '{job="t"}', t_q, "1m")
    names = {dict(k)[M]: v for k, v in got.items()}
    assert set(names) == {"before", "after", "mixed_ok", "ooo"}, set(names)
    assert len(names["before"]) == 10 and len(names["after"]) == 10
    assert len(names["mixed_ok"]) == 5
    assert [p[1] for p in names["ooo"]] == ["0", "1", "2", "3", "4"]


def test_kill9_loses_no_acknowledged_sample(promring_up, tmp_path):
    data = tmp_path / "data"
    pr = promring_up(data)
    t0 = 1_700_000_000_000
    acked: list[tuple[str, int]] = []
    stop = threading.Event()
    rng = random.Random(7)

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"s{w}_{rng.randrange(50)}"
            try:
                r = push(pr.write_url, [((("__name__", "kill"), ("s", name), ("w", str(w))),
                                          [t0 + i * 1000], [float(i)])], timeout=5)
            except requests.RequestException:
                return  # the server was killed mid-request: that request was never acknowledged
            if r.status_code == 200:
                acked.append((f"{w}/{name}", t0 + i * 1000))
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    pr.kill9()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 50, len(acked)

    pr2 = promring_up(data)
    got = raw_samples(pr2.api, '{__name__="kill"}', (t0 + 10_000_000) / 1000, "3h")
    served = {(f"{dict(k)['w']}/{dict(k)['s']}", int(round(p[0] * 1000))) for k, v in got.items() for p in v}
    missing = set(acked) - served
    assert not missing, f"{len(missing)} acknowledged samples lost, e.g. {sorted(missing)[:5]}"


def test_staleness_marker_passes_through(promring_up):
    """A stale NaN ends the series for instant queries, exactly as in Prometheus."""
    import struct

    stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
    pr = promring_up()
    t0 = 1_700_000_000_000
    lbls = (("__name__", "flappy"), ("job", "t"))
    assert push(pr.write_url, [(lbls, [t0, t0 + 1000, t0 + 2000], [1.0, 2.0, stale])]).status_code == 200
    from rw import query
    assert [s["value"][1] for s in query(pr.api, "flappy", (t0 + 1500) / 1000)] == ["2"]
    assert query(pr.api, "flappy", (t0 + 2500) / 1000) == []
    assert [s["value"][1] for s in query(pr.api, "count_over_time(flappy[1m])", (t0 + 2500) / 1000)] == ["2"]


def test_metrics_endpoint_has_process_and_component_metrics(promring_up):
    pr = promring_up()
    text = requests.get(f"http://127.0.0.1:{pr.http_port}/metrics", timeout=10).text
    for name in ("process_resident_memory_bytes", "thanos_receive_http_requests_total",
                 "prometheus_tsdb_head_series", "thanos_store_index_cache_requests_total",
                 "http_requests_total"):
        assert name in text, name
    for path in ("/-/healthy", "/-/ready"):
        assert requests.get(f"http://127.0.0.1:{pr.http_port}{path}", timeout=10).status_code == 200
        assert requests.get(f"http://127.0.0.1:{pr.rw_port}{path}", timeout=10).status_code == 200
