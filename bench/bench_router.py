"""Receive router: throughput at replication factor 1 and 3, and what replication costs.

Three ingestors (``promring receive``) behind one router on loopback; an asyncio client sends
pre-encoded snappy requests with a few requests in flight, each sender owning a block of series
(as Prometheus's shards do) so that no series goes backwards in time. The baseline sends the
same load to one ingestor directly. Also times the router's per-request work in-process (hash,
ketama lookup, split by node) and compares it with per-series Python alternatives (the
``xxhash`` package called per key, ``uhashring``'s ketama) to justify doing it in C + numpy.

    python bench/bench_router.py --series 20000 --rounds 20 --inflight 4
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from harness import receive_process  # noqa: E402
from receiver.hashring import Endpoint, KetamaRing, _ringc, hash_series  # noqa: E402
from receiver.remotewrite import decode, encode_write_request, snappy_compress  # noqa: E402

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def make_labels(n_series: int) -> list[tuple]:
    return [(("__name__", f"bench_metric_{i % 200}_total"), ("cluster", "eu-1"),
             ("instance", f"10.1.{i // 250 % 256}.{i % 250}:9100"), ("job", "node"),
             ("series", str(i))) for i in range(n_series)]


def make_payloads(labels, rounds: int, per_request: int, t0: int) -> list[tuple[int, bytes]]:
    out = []
    for r in range(rounds):
        for block, start in enumerate(range(0, len(labels), per_request)):
            chunk = labels[start:start + per_request]
            raw = encode_write_request((lb, np.array([t0 + r * 15_000]), np.array([float(r + i)]))
                                       for i, lb in enumerate(chunk))
            out.append((block, snappy_compress(raw)))
    return out


async def drive(url: str, payloads, inflight: int) -> tuple[float, int]:
    queues: dict[int, list[bytes]] = {}
    for block, body in payloads:
        queues.setdefault(block, []).append(body)
    blocks = sorted(queues)
    errors = 0

    async def sender(mine: list[int], session: aiohttp.ClientSession) -> None:
        nonlocal errors
        # Round-major order within a sender so that each block's requests stay in time order.
        depth = max(len(queues[b]) for b in mine)
        for r in range(depth):
            for b in mine:
                if r < len(queues[b]):
                    async with session.post(url, data=queues[b][r], headers=HEADERS) as resp:
                        await resp.read()
                        if resp.status >= 300:
                            errors += 1

    async with aiohttp.ClientSession() as session:
        t = time.perf_counter()
        await asyncio.gather(*(sender(blocks[i::inflight], session) for i in range(inflight)))
        return time.perf_counter() - t, errors


def routing_microbench(n_series: int) -> list[tuple[str, float]]:
    """Seconds per request of n_series for each routing step, ours vs per-series Python."""
    labels = make_labels(n_series)
    raw = encode_write_request((lb, np.array([1]), np.array([1.0])) for lb in labels)
    dec = decode(raw)
    eps = [Endpoint(f"127.0.0.1:{10901 + i}") for i in range(3)]
    ring = KetamaRing(eps, 3)
    rows: list[tuple[str, float]] = []

    def timeit(fn, n=20) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n

    rows.append(("decode (C, existing)", timeit(lambda: decode(raw))))
    rows.append(("hash keys: xxhash64 in C, whole list", timeit(lambda: hash_series("t", dec.keys))))
    try:
        import xxhash
        rows.append(("hash keys: xxhash package, per-key call",
                     timeit(lambda: [xxhash.xxh64_intdigest(b"t\xff" + k) for k in dec.keys])))
    except ImportError:
        pass
    h = hash_series("t", dec.keys)
    rows.append(("ketama RF3 lookup: searchsorted + table", timeit(lambda: ring.assign(h))))
    try:
        from uhashring import HashRing
        uh = HashRing(nodes=[e.address for e in eps])
        keys = dec.keys
        rows.append(("ketama RF3 lookup: uhashring range() per key",
                     timeit(lambda: [list(uh.range(k, 3)) for k in keys], n=2)))
    except ImportError:
        pass
    spans = _ringc.series_spans(raw)
    assign = ring.assign(h)

    def split():
        for node in range(3):
            rows_ = np.flatnonzero((assign == node).any(axis=1)).astype(np.int32)
            _ringc.gather(raw, spans, rows_.tobytes())
    rows.append(("split into per-node requests (spans + gather)",
                 timeit(lambda: (_ringc.series_spans(raw), split()))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-request", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=4)
    a = ap.parse_args()

    print(f"## Router per-request work ({a.per_request} series, in-process)\n")
    print("| step | ms per request |\n|---|---|")
    for name, secs in routing_microbench(a.per_request):
        print(f"| {name} | {secs * 1000:.2f} |")

    labels = make_labels(a.series)
    n_samples = a.series * a.rounds
    results = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for name, rf in (("direct to one ingestor", 0), ("router, RF 1", 1), ("router, RF 3", 3)):
            sub = work / name.replace(" ", "_").replace(",", "")
            procs = [receive_process(sub, f"ing{i}") for i in range(1 if rf == 0 else 3)]
            try:
                for p in procs:
                    p.start()
                target = procs[0]
                if rf:
                    ring = sub / "hashrings.json"
                    ring.write_text(json.dumps([{"hashring": "default",
                                                 "endpoints": [p.grpc for p in procs]}]))
                    router = receive_process(sub, "router", f"--receive.hashrings-file={ring}",
                                             "--receive.hashrings-algorithm=ketama",
                                             f"--receive.replication-factor={rf}")
                    procs.append(router)
                    router.start()
                    target = router
                t0 = int(time.time() * 1000) - a.rounds * 15_000 - 60_000
                payloads = make_payloads(labels, a.rounds, a.per_request, t0)
                secs, errors = asyncio.run(drive(target.url("remote_write", "/api/v1/receive"),
                                                 payloads, a.inflight))
                results.append((name, rf, secs, errors))
            finally:
                for p in procs:
                    p.stop()

    print(f"\n## Throughput ({a.series} series x {a.rounds} rounds = {n_samples} samples, "
          f"{a.per_request} series per request, {a.inflight} in flight, 2 cores shared by all "
          "processes)\n")
    print("| setup | seconds | samples/s accepted | stored copies/s | errors | vs RF 1 |")
    print("|---|---|---|---|---|---|")
    rf1 = next((s for n, rf, s, e in results if rf == 1), None)
    for name, rf, secs, errors in results:
        rel = f"{secs / rf1:.2f}x time" if rf1 and rf else "-"
        print(f"| {name} | {secs:.2f} | {n_samples / secs:,.0f} | {n_samples * max(rf, 1) / secs:,.0f} "
              f"| {errors} | {rel} |")


if __name__ == "__main__":
    main()
