"""The floor under a warm store Series call: the store's CPU per call (utime + stime from /proc)
for a trivial unary call (``thanos.info.Info/Info``), a 24 h Series call matching nothing and
bench_store_call.py's one-series Series call at 1 h and 24 h, in alternating rounds on one
connection, each call followed by ``--gap-ms`` of idle (as behind a querier). What Info costs is
what any gRPC call pays on this server; the rest is the Series call's own work.

    python bench/bench_store_floor.py --blocks /work/scale/s1 --gap-ms 5
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from bench_fixed_cost import cpu_s  # noqa: E402
from bench_store_call import HOUR_MS, MATCHERS, end_of_blocks, frames, start_store  # noqa: E402
from receiver.tsdb.labels import Matcher, MatchType  # noqa: E402
from storeapi.h2client import H2Channel  # noqa: E402
from storeapi.wire import series_request  # noqa: E402

NOTHING = [Matcher(MatchType.EQ, "__name__", "x"), Matcher(MatchType.EQ, "instance", "none")]


async def run(pid: int, port: int, end_ms: int, rounds: int, calls: int, gap_s: float) -> None:
    ch = H2Channel(f"127.0.0.1:{port}", "identity")

    def series(hours: int, matchers: list[Matcher]):
        req = series_request(end_ms - hours * HOUR_MS - 300_000, end_ms, matchers, False, (), 0,
                             256, 0, True)
        return lambda: frames(ch, req)

    kinds = {"Info": lambda: ch.unary("/thanos.info.Info/Info", b"", 60),
             "Series 24 h, no match": series(24, NOTHING),
             "Series 1 h, one series": series(1, MATCHERS),
             "Series 24 h, one series": series(24, MATCHERS)}
    try:
        for call in kinds.values():
            for _ in range(50):  # warm up
                await call()
        cpu = dict.fromkeys(kinds, 0.0)
        for _ in range(rounds):
            for name, call in kinds.items():
                c0 = cpu_s(pid)
                for _ in range(calls):
                    await call()
                    time.sleep(gap_s)  # blocks this client: the store idles meanwhile
                cpu[name] += cpu_s(pid) - c0
        for name, total in cpu.items():
            print(f"{name}: store CPU per call {total / rounds / calls * 1e6:.0f} us", flush=True)
    finally:
        await ch.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    ap.add_argument("--calls", type=int, default=1000, help="calls per kind and round")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="idle time after each call")
    a = ap.parse_args()
    end_ms = end_of_blocks(a.blocks)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-floor-"))
    proc, port = start_store(REPO, a.blocks, tmp)
    try:
        asyncio.run(run(proc.pid, port, end_ms, a.rounds, a.calls, a.gap_ms / 1000))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
