"""The ``promring`` command: one binary, Thanos-style subcommands and flag names."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from common.logs import setup_logging
from common.units import parse_bytes, parse_duration_ms, parse_label_flag

log = logging.getLogger("promring")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log.level", dest="log_level", default="info",
                   choices=["debug", "info", "warn", "error"])
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])


def _receive_flags(p: argparse.ArgumentParser, *, up: bool) -> None:
    p.add_argument("--remote-write.address", dest="remote_write_address", default="0.0.0.0:19291",
                   help="Address for the remote-write endpoint (POST /api/v1/receive).")
    p.add_argument("--label", dest="labels", action="append", default=[],
                   help='External label added to every series, as name="value" (repeatable).')
    p.add_argument("--receive.tenant-header", dest="tenant_header", default="THANOS-TENANT")
    p.add_argument("--receive.default-tenant-id", dest="default_tenant", default="default-tenant")
    p.add_argument("--receive.tenant-label-name", dest="tenant_label_name", default="tenant_id")
    p.add_argument("--receive.max-request-size", dest="max_request_size", default="32MiB",
                   help="Largest remote-write body accepted; larger ones get 413.")
    p.add_argument("--tsdb.wal-fsync", dest="wal_fsync", default="none", choices=["none", "batch"],
                   help="none: acknowledge once the WAL write reached the OS (survives a process "
                        "crash); batch: also fsync, shared by concurrent requests (survives power loss).")
    p.add_argument("--tsdb.min-block-duration", dest="min_block_duration", default="2h")


def _query_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query.lookback-delta", dest="lookback_delta", default="5m")
    p.add_argument("--query.timeout", dest="query_timeout", default="2m")
    p.add_argument("--query.max-concurrent", dest="max_concurrent", type=int, default=20)
    p.add_argument("--query.max-samples", dest="max_samples", type=int, default=50_000_000)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promring", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("receive", help="Accept Prometheus remote_write and serve it over the StoreAPI.")
    _common(r)
    _receive_flags(r, up=False)
    r.add_argument("--grpc-address", default="0.0.0.0:10901")
    r.add_argument("--http-address", default="0.0.0.0:10902")
    r.add_argument("--tsdb.path", dest="tsdb_path", default="./data")

    q = sub.add_parser("query", help="Answer PromQL over StoreAPI endpoints (Prometheus HTTP API).")
    _common(q)
    _query_flags(q)
    q.add_argument("--http-address", default="0.0.0.0:10902")
    q.add_argument("--endpoint", dest="endpoints", action="append", default=[],
                   help="StoreAPI gRPC address (repeatable).")

    u = sub.add_parser("up", help="Everything on one machine: ingestor + querier.")
    _common(u)
    _receive_flags(u, up=True)
    _query_flags(u)
    u.add_argument("--data-dir", default="./data")
    u.add_argument("--http-address", default="0.0.0.0:10902", help="Prometheus query API address.")
    u.add_argument("--grpc-address", default="127.0.0.1:0",
                   help="The ingestor's StoreAPI address (port 0: any free port on loopback).")
    return parser


def receive_config(a: argparse.Namespace, tsdb_path: str, http_address: str, grpc_address: str):
    from receiver.config import ReceiveConfig
    labels = tuple(sorted(dict(parse_label_flag(x) for x in a.labels).items()))
    return ReceiveConfig(
        remote_write_address=a.remote_write_address, grpc_address=grpc_address,
        http_address=http_address, tsdb_path=Path(tsdb_path), external_labels=labels,
        tenant_header=a.tenant_header, default_tenant=a.default_tenant,
        tenant_label_name=a.tenant_label_name, max_request_bytes=parse_bytes(a.max_request_size),
        wal_fsync=a.wal_fsync, chunk_range_ms=parse_duration_ms(a.min_block_duration))


def query_config(a: argparse.Namespace, endpoints: list[str]):
    from querier.config import QueryConfig
    return QueryConfig(
        http_address=a.http_address, endpoints=endpoints,
        lookback_delta_ms=parse_duration_ms(a.lookback_delta),
        timeout_s=parse_duration_ms(a.query_timeout) / 1000, max_concurrent=a.max_concurrent,
        max_samples=a.max_samples)


async def _run_until_signal(components: list) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = []
    try:
        for c in components:
            await c.start()
            started.append(c)
        log.info("promring is up", extra={"components": [type(c).__name__ for c in components]})
        await stop.wait()
        log.info("shutting down")
    finally:
        for c in reversed(started):
            await c.stop()


class _Up:
    """Ingestor then querier, the querier pointed at the ingestor's bound gRPC port."""

    def __init__(self, a: argparse.Namespace) -> None:
        from receiver.server import Receiver
        self.a = a
        self.receiver = Receiver(receive_config(a, a.data_dir, "", a.grpc_address))
        self.querier = None

    async def start(self) -> None:
        from querier.server import Querier
        await self.receiver.start()
        endpoint = f"127.0.0.1:{self.receiver.ports['grpc']}"
        self.querier = Querier(query_config(self.a, [endpoint]), registry=self.receiver.registry)
        await self.querier.start()
        log.info("listening", extra={"remote_write": self.receiver.ports["remote_write"],
                                     "http": self.querier.port, "grpc": self.receiver.ports["grpc"]})

    async def stop(self) -> None:
        if self.querier is not None:
            await self.querier.stop()
        await self.receiver.stop()


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    setup_logging(a.log_level, a.log_format)
    if a.command == "receive":
        from receiver.server import Receiver
        comps = [Receiver(receive_config(a, a.tsdb_path, a.http_address, a.grpc_address))]
    elif a.command == "query":
        from querier.server import Querier
        comps = [Querier(query_config(a, a.endpoints))]
    else:
        comps = [_Up(a)]
    try:
        asyncio.run(_run_until_signal(comps))
    except KeyboardInterrupt:
        pass
    sys.exit(0)
