"""Large remote-write bodies (Prometheus-sized, tens of KiB compressed): concurrent writers'
acknowledged samples survive ``kill -9``, and a large corrupt or oversized body gets its 4xx
while the valid requests around it are stored."""
from __future__ import annotations

import hashlib
import threading
import time

import cramjam
import requests

from rw import HEADERS, body, push, raw_samples

T0 = 1_700_000_000_000
N_SERIES = 600  # per request
LARGE = 16 << 10  # compressed bytes: a body at least this large


def series_name(w: int, k: int) -> str:
    """Label values that snappy cannot shrink much (a hash), as real instance/pod names."""
    return hashlib.sha256(f"{w}/{k}".encode()).hexdigest()


def big_series(w: int, i: int) -> list:
    return [((("__name__", "big"), ("s", series_name(w, k)), ("w", str(w))),
             [T0 + i * 1000], [float(i)]) for k in range(N_SERIES)]


def test_large_bodies_from_concurrent_writers_survive_kill9(promring_up, tmp_path):
    assert len(body(big_series(0, 0))) >= LARGE
    data = tmp_path / "data"
    pr = promring_up(data)
    acked: dict[int, int] = {}  # writer -> last acknowledged round (rounds are acked in order)
    stop = threading.Event()
    failures: list[str] = []

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                r = push(pr.write_url, big_series(w, i), timeout=10)
            except requests.RequestException:
                return  # killed mid-request: never acknowledged
            if r.status_code != 200:
                failures.append(f"writer {w} round {i}: {r.status_code} {r.text}")
                return
            acked[w] = i
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while not failures and (len(acked) < 4 or min(acked.values()) < 3) and time.monotonic() < deadline:
        time.sleep(0.1)
    pr.kill9()
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len(acked) == 4 and min(acked.values()) >= 3, acked

    pr2 = promring_up(data)
    got = raw_samples(pr2.api, '{__name__="big"}', (T0 + 3_600_000) / 1000, "2h")
    served: dict[tuple[str, str], set[int]] = {}
    for k, v in got.items():
        lbl = dict(k)
        served[(lbl["w"], lbl["s"])] = {int(round(p[0] * 1000)) for p in v}
    for w, last in acked.items():
        want = {T0 + i * 1000 for i in range(last + 1)}
        for k in range(N_SERIES):
            have = served.get((str(w), series_name(w, k)), set())
            assert want <= have, f"writer {w} series {k}: lost {sorted(want - have)[:5]}"


def test_large_bad_bodies_get_4xx_and_valid_ones_are_stored(promring_up):
    pr = promring_up()
    good = body(big_series(9, 0))
    bad = bytearray(good)
    bad[len(bad) // 2:] = b"\xff" * (len(bad) - len(bad) // 2)
    bomb = cramjam.snappy.compress_raw(b"\0" * (300 << 20))  # over the decompressed-size limit
    assert len(bomb) >= LARGE
    for data, want in ((bytes(bad), 400), (bytes(bomb), 413), (good, 200)):
        r = requests.post(pr.write_url, data=data, headers=HEADERS, timeout=30)
        assert r.status_code == want, (want, r.status_code, r.text)
    got = raw_samples(pr.api, '{__name__="big"}', (T0 + 60_000) / 1000, "5m")
    assert len(got) == N_SERIES
