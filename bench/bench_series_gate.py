"""What the store gateway's Series concurrency gate (``--store.grpc.series-max-concurrency``,
default 20, store/limits.py) adds to one Series call when a slot is free, as every query
passes it: bench_grpc_metrics's server-streaming handler called bare and gated, on one event
loop in this process, in alternating rounds; medians of the per-call times.

    python bench/bench_series_gate.py [--calls 20000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry  # noqa: E402

from bench_grpc_metrics import _handler, _per_call_us  # noqa: E402
from store.limits import SeriesGate  # noqa: E402


async def main(calls: int, rounds: int) -> None:
    gated = SeriesGate(20, CollectorRegistry()).wrap(_handler)
    bare: list[float] = []
    with_gate: list[float] = []
    for _ in range(rounds):  # alternating, so load from elsewhere hits both alike
        bare.append(await _per_call_us(_handler, calls))
        with_gate.append(await _per_call_us(gated, calls))
    b, g = statistics.median(bare), statistics.median(with_gate)
    print(f"bare {b:.2f} us/call, gated {g:.2f} us/call, the gate adds {g - b:.2f} us")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(main(a.calls, a.rounds))
