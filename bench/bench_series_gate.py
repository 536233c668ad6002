"""What the store gateway's Series concurrency gate (``--store.grpc.series-max-concurrency``,
default 20, store/limits.py) adds to one Series call when a slot is free, as every query
passes it: a server-streaming handler yielding three frames, called bare and gated, on one
event loop in this process, in alternating rounds; CPU time per call, medians.

    python bench/bench_series_gate.py [--calls 20000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry  # noqa: E402

from store.limits import SeriesGate  # noqa: E402


async def _handler(request, context):
    for _ in range(3):
        yield b"frame"


async def _cpu_us_per_call(call, calls: int) -> float:
    t0 = time.process_time()
    for i in range(calls):
        async for _ in call(i, None):
            pass
    return (time.process_time() - t0) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    gated = SeriesGate(20, CollectorRegistry()).wrap(_handler)
    bare: list[float] = []
    with_gate: list[float] = []
    for _ in range(rounds):
        bare.append(await _cpu_us_per_call(_handler, calls))
        with_gate.append(await _cpu_us_per_call(gated, calls))
    b, g = statistics.median(bare), statistics.median(with_gate)
    print(f"bare {b:.2f} us/call, gated {g:.2f} us/call, gate adds {g - b:.2f} us CPU per call")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(main(a.calls, a.rounds))
