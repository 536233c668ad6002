"""An in-process ingestor (or several) and a querier over them, on loopback ports, for tests of
the query API; plus a "black hole" endpoint that accepts TCP connections and never answers."""
from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import numpy as np

from querier.config import QueryConfig
from querier.endpoints import HealthOptions
from querier.fanout import StoreSet
from querier.server import Querier
from receiver.config import ReceiveConfig
from receiver.remotewrite import encode_write_request, snappy_compress
from receiver.server import Receiver

RW_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
              "X-Prometheus-Remote-Write-Version": "0.1.0"}


@dataclass
class Cluster:
    receivers: list[Receiver]
    querier: Querier
    http: aiohttp.ClientSession
    extra: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.querier.port}"

    def grpc(self, i: int = 0) -> str:
        return f"127.0.0.1:{self.receivers[i].ports['grpc']}"

    async def push(self, series, i: int = 0) -> None:
        """series: [(labels, ts, vals)]; written through the receiver's remote-write endpoint."""
        body = snappy_compress(encode_write_request(
            (tuple(lbls), np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=np.float64))
            for lbls, ts, vals in series))
        url = f"http://127.0.0.1:{self.receivers[i].ports['remote_write']}/api/v1/receive"
        async with self.http.post(url, data=body, headers=RW_HEADERS) as r:
            assert r.status == 200, await r.text()

    async def get(self, path: str, **params) -> tuple[int, dict]:
        async with self.http.get(self.base + path, params=params) as r:
            return r.status, await r.json(content_type=None)

    async def post(self, path: str, **form) -> tuple[int, dict]:
        async with self.http.post(self.base + path, data=form) as r:
            return r.status, await r.json(content_type=None)


class BlackHole:
    """A TCP listener that never accepts: connections complete in the kernel's backlog and
    then hang, like an endpoint behind a dead load balancer or a frozen process."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def dead_address() -> str:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@asynccontextmanager
async def cluster(tmp_path: Path, cfg: QueryConfig = QueryConfig(), n_receivers: int = 1,
                  extra_endpoints: tuple[str, ...] = (), health: HealthOptions = HealthOptions(),
                  max_exemplars: int = 0):
    receivers = []
    for i in range(n_receivers):
        r = Receiver(ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="127.0.0.1:0",
                                   http_address="", tsdb_path=tmp_path / f"recv{i}",
                                   external_labels=(("replica", str(i)),) if n_receivers > 1 else (),
                                   max_exemplars=max_exemplars))
        await r.start()
        receivers.append(r)
    endpoints = [f"127.0.0.1:{r.ports['grpc']}" for r in receivers] + list(extra_endpoints)
    cfg = replace(cfg, http_address="127.0.0.1:0", endpoints=endpoints)
    from common.ops import new_registry
    registry = new_registry()
    q = Querier(cfg, registry=registry,
                stores=StoreSet(endpoints, timeout_s=cfg.store_timeout_s, registry=registry,
                                health=health))
    await q.start()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        yield Cluster(receivers, q, http)
    finally:
        await http.close()
        await q.stop()
        for r in receivers:
            await r.stop()


def run(coro) -> None:
    asyncio.run(coro)
