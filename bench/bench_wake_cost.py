"""What waking up after idle costs on this machine, with no promring code involved: a plain
asyncio TCP server doing a fixed pure-Python job per request (a few thousand dict and list
reads over a few MB), asked back to back and with the client idling ``--gaps`` ms between
requests; its CPU time per request (utime + stime from /proc, as bench_fixed_cost.py counts).

Why: promring's store uses 2-3x more CPU per Series call behind a querier than in
bench_store_call.py's back-to-back loop, with the same request and the same frames. This
control shows the same growth for a server that is not promring, so it is the cost of starting
each call with cold CPU caches after the core ran something else (the querier, other load),
not extra work in the store.

    python bench/bench_wake_cost.py
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fixed_cost import cpu_s  # noqa: E402


def serve(stride: int) -> None:
    """The server: prints its port, then answers each line with a checksum of a fixed walk."""
    data = {f"k{i}": [i, str(i), (i, i)] for i in range(20_000)}
    keys = list(data)[::stride]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            total = 0
            for k in keys:
                v = data[k]
                total += v[0] + len(v[1])
            writer.write(b"%d\n" % total)

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await srv.serve_forever()
    asyncio.run(main())


def wait(gap_s: float, busy: bool) -> None:
    """The client's gap: asleep, or spinning on its own core (so no core need go idle)."""
    if not busy:
        time.sleep(gap_s)
        return
    t = time.perf_counter()
    while time.perf_counter() - t < gap_s:
        pass


def measure(gaps_ms: list[float], requests: int, rounds: int, stride: int, busy: bool) -> None:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--stride", str(stride)],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            replies = sock.makefile("rb")

            def ask() -> None:
                sock.sendall(b"x\n")
                replies.readline()
            for _ in range(200):  # warm up
                ask()
            cpu = dict.fromkeys(gaps_ms, 0.0)
            for _ in range(rounds):  # alternating, so load from elsewhere hits every gap alike
                for gap in gaps_ms:
                    c0 = cpu_s(proc.pid)
                    for _ in range(requests):
                        ask()
                        if gap:
                            wait(gap / 1000, busy)
                    cpu[gap] += cpu_s(proc.pid) - c0
        base = cpu[gaps_ms[0]] or 1e-9
        for gap in gaps_ms:
            print(f"gap {gap:g} ms: server CPU per request {cpu[gap] / rounds / requests * 1e6:.0f}"
                  f" us ({cpu[gap] / base:.2f}x)", flush=True)
    finally:
        proc.kill()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gaps", type=lambda s: [float(x) for x in s.split(",")],
                    default=[0, 0.5, 1, 3, 10], help="client idle times between requests, ms")
    ap.add_argument("--requests", type=int, default=300, help="requests per gap and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stride", type=int, default=25, help="every n-th key read (job size)")
    ap.add_argument("--busy", action="store_true",
                    help="the client spins through its gaps instead of sleeping")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.stride)
    else:
        measure(a.gaps, a.requests, a.rounds, a.stride, a.busy)


if __name__ == "__main__":
    main()
