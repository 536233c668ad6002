"""What go-grpc-prometheus's server metrics add to one StoreAPI call (issue 13): a server-streaming
handler yielding two messages, called bare and wrapped by GrpcServerMetrics, on one event loop
in this process (no network), so the per-call metrics cost shows on its own.

    python bench/bench_grpc_metrics.py [--calls 20000] [--repo /work/main]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry


async def _handler(request, context):
    yield b"a"
    yield b"b"


async def _per_call_us(call, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        async for _ in call(None, None):
            pass
    return (time.perf_counter() - t0) / calls * 1e6


async def main(calls: int) -> None:
    from storeapi.grpcmetrics import GrpcServerMetrics  # of --repo's checkout
    wrapped = GrpcServerMetrics(CollectorRegistry()).wrap(
        grpc.unary_stream_rpc_method_handler(_handler), "/thanos.Store/Series").unary_stream
    for round_ in range(3):  # alternating, so load from elsewhere hits both alike
        bare = await _per_call_us(_handler, calls)
        metered = await _per_call_us(wrapped, calls)
        print(f"round {round_}: bare {bare:.2f} us/call, with grpc_server_* {metered:.2f} "
              f"us/call, metrics add {metered - bare:.2f} us")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout whose storeapi to measure (default: this one)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo))
    asyncio.run(main(args.calls))
