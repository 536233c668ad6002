"""Where rule results go: the ruler's own TSDB (stateful: head + WAL, blocks shipped to the
bucket, served over the StoreAPI) or remote write to receivers (stateless, ``--remote-write.config``).

Both take the same input, a batch of (labels, timestamp ms, value), encoded once as a
remote-write request: the TSDB appends it through the receiver's decoder, remote write sends it.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import numpy as np
import yaml
from common.aio import cancel_and_wait
from prometheus_client import CollectorRegistry, Counter, Gauge

from common.units import parse_duration_ms
from receiver.remotewrite import encode_write_request, snappy_compress

from .rules import Labels

log = logging.getLogger(__name__)

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
Point = tuple[Labels, int, float]

MAX_QUEUED_BATCHES = 10_000  # per remote-write queue; the oldest are dropped beyond it


def encode_points(points: list[Point], external: Labels = ()) -> bytes:
    """An uncompressed prompb WriteRequest of one sample per point; external labels are added
    where a series lacks them (as Prometheus's remote write does)."""
    ext = dict(external)
    series = []
    for labels, ts, value in points:
        lb = dict(ext)
        lb.update(labels)
        series.append((tuple(sorted(lb.items())), np.array([ts], dtype=np.int64),
                       np.array([value], dtype=np.float64)))
    return encode_write_request(series)


class ResultStore(Protocol):
    async def start(self) -> None: ...
    async def append(self, points: list[Point]) -> None: ...
    async def stop(self) -> None: ...


# -- stateless: remote write ---------------------------------------------------------------------

@dataclass
class RemoteWriteTarget:
    url: str
    name: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    basic_auth: tuple[str, str] | None = None
    bearer_token: str = ""


def parse_remote_write_config(text: str) -> list[RemoteWriteTarget]:
    """Thanos's ``--remote-write.config``: Prometheus's ``remote_write:`` section. ValueError
    names the problem; an empty config means no remote write (stateful mode)."""
    try:
        doc = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"--remote-write.config: {' '.join(str(e).split())}") from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("remote_write", []), list):
        raise ValueError("--remote-write.config: expected a mapping with a remote_write list")
    targets = []
    for i, e in enumerate(doc.get("remote_write") or []):
        if not isinstance(e, dict) or not isinstance(e.get("url"), str) or not e["url"]:
            raise ValueError(f"--remote-write.config: remote_write[{i}]: url is required")
        if not e["url"].startswith(("http://", "https://")):
            raise ValueError(f"--remote-write.config: remote_write[{i}]: url must be http(s)")
        auth = e.get("basic_auth")
        try:
            timeout = parse_duration_ms(str(e.get("remote_timeout", "30s"))) / 1000
        except ValueError as ex:
            raise ValueError(f"--remote-write.config: remote_write[{i}]: {ex}") from None
        targets.append(RemoteWriteTarget(
            url=e["url"], name=str(e.get("name", "")),
            headers={str(k): str(v) for k, v in (e.get("headers") or {}).items()},
            timeout_s=timeout or 30.0,
            basic_auth=(str(auth.get("username", "")), str(auth.get("password", "")))
            if isinstance(auth, dict) else None, bearer_token=str(e.get("bearer_token", ""))))
    return targets


class _Queue:
    """One remote-write target: batches sent in order, retried with backoff on 5xx/429 and
    connection errors, dropped on other 4xx (as Prometheus does)."""

    def __init__(self, target: RemoteWriteTarget, metrics: "_Metrics") -> None:
        self.t = target
        self.m = metrics
        self.batches: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.session: aiohttp.ClientSession | None = None

    def push(self, body: bytes) -> None:
        if len(self.batches) >= MAX_QUEUED_BATCHES:
            self.batches.popleft()
            self.m.dropped.labels(self.t.url).inc()
        self.batches.append(body)
        self.wake.set()

    async def run(self) -> None:
        headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                   "User-Agent": "promring-ruler",
                   "X-Prometheus-Remote-Write-Version": "0.1.0", **self.t.headers}
        if self.t.bearer_token:
            headers["Authorization"] = f"Bearer {self.t.bearer_token}"
        if self.t.basic_auth:
            user_pass = f"{self.t.basic_auth[0]}:{self.t.basic_auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(user_pass).decode()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.t.timeout_s))
        backoff = 0.03
        while True:
            if not self.batches:
                self.wake.clear()
                await self.wake.wait()
                continue
            body = self.batches[0]
            try:
                async with self.session.post(self.t.url, data=body, headers=headers) as r:
                    text = await r.content.read(512)
                    if r.status < 300 or (400 <= r.status < 500 and r.status != 429):
                        if r.status >= 300:
                            log.error("remote write refused a batch", extra={
                                "url": self.t.url, "status": r.status, "body": text[:200]})
                            self.m.failed.labels(self.t.url).inc()
                        else:
                            self.m.sent.labels(self.t.url).inc()
                        self.batches.popleft()
                        backoff = 0.03
                        continue
                    why = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                why = str(e) or type(e).__name__
            log.warning("remote write failed, retrying", extra={"url": self.t.url, "err": why})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def flush(self, timeout_s: float) -> None:
        """Give queued batches up to ``timeout_s`` to go out (shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while self.batches and loop.time() < end:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await cancel_and_wait(self.task)
        if self.session is not None:
            await self.session.close()


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter("prometheus_remote_storage_sent_batches", "Batches sent.", ["url"],
                            registry=registry)
        self.failed = Counter("prometheus_remote_storage_failed_batches",
                              "Batches refused by the receiver.", ["url"], registry=registry)
        self.dropped = Counter("prometheus_remote_storage_dropped_batches",
                               "Batches dropped because the queue was full.", ["url"],
                               registry=registry)


class RemoteWriteStore:
    """Stateless mode: every batch goes to every remote-write target."""

    def __init__(self, targets: list[RemoteWriteTarget], external_labels: Labels,
                 registry: CollectorRegistry) -> None:
        metrics = _Metrics(registry)
        self.queues = [_Queue(t, metrics) for t in targets]
        self.external = external_labels

    async def start(self) -> None:
        for q in self.queues:
            q.task = asyncio.get_running_loop().create_task(q.run())

    async def append(self, points: list[Point]) -> None:
        if not points:
            return
        body = snappy_compress(encode_points(points, self.external))
        for q in self.queues:
            q.push(body)

    async def stop(self) -> None:
        await asyncio.gather(*(q.flush(5.0) for q in self.queues))
        for q in self.queues:
            await q.close()


# -- stateful: own TSDB ---------------------------------------------------------------------------

RULER_TENANT = "ruler"


@dataclass
class TSDBStoreConfig:
    data_dir: Path
    external_labels: Labels
    block_duration_ms: int = 2 * 3_600_000
    retention_ms: int = 48 * 3_600_000
    objstore_config: str | None = None
    lifecycle_interval_s: float = 30.0


class TSDBStore:
    """Stateful mode: results in a head + WAL under ``--data-dir``, cut into blocks shipped to
    the bucket (receiver's lifecycle), served over the StoreAPI with the ``--label`` set."""

    def __init__(self, cfg: TSDBStoreConfig, registry: CollectorRegistry) -> None:
        from receiver.multitsdb import MultiTSDB, MultiTSDBSource, TSDBOptions
        from receiver.tsdb.head import HeadOptions
        self.cfg = cfg
        self.registry = registry
        self.db = MultiTSDB(TSDBOptions(path=cfg.data_dir, external_labels=cfg.external_labels,
                                        head=HeadOptions(chunk_range_ms=cfg.block_duration_ms),
                                        retention_ms=cfg.retention_ms, too_far_in_future_ms=0))
        self.source = MultiTSDBSource(self.db)
        self.bucket = None
        self.lifecycle = None
        Gauge("prometheus_tsdb_head_series", "Series in the head.", registry=registry
              ).set_function(self.db.num_series)

    def _tenant(self):
        t = self.db.tenant(RULER_TENANT)
        t.external_labels = self.cfg.external_labels  # the ruler's blocks: --label only
        return t

    async def start(self) -> None:
        from receiver.lifecycle import BlockLifecycle
        await asyncio.to_thread(self.db.open_existing)
        self._tenant()
        if self.cfg.objstore_config:
            from objstore import bucket_from_config
            self.bucket = bucket_from_config(self.cfg.objstore_config)
        self.lifecycle = BlockLifecycle(self.db, self.bucket, self.cfg.lifecycle_interval_s,
                                        registry=self.registry)
        self.lifecycle.start()

    async def append(self, points: list[Point]) -> None:
        from receiver.remotewrite import decode
        if not points:
            return
        t = self._tenant()
        out = t.write(decode(encode_points(points)))
        await t.sync()
        if out.conflicts:
            log.warning("rule results not stored", extra={"detail": "; ".join(out.conflicts)})

    async def last_sample(self, want: Labels, now_ms: int, window_ms: int
                          ) -> tuple[int, float] | None:
        """Newest sample (stale markers included) of exactly the series ``want`` within
        ``window_ms`` before ``now_ms``: restoring ``for`` state from the own TSDB, as Thanos's
        stateful ruler does."""
        from receiver.tsdb.chunkenc import decode_many
        from receiver.tsdb.labels import Matcher, MatchType
        mint = now_ms - window_ms
        matchers = [Matcher(MatchType.EQ, k, v) for k, v in want]
        best = None
        for lbls, chunks in self._tenant().series(matchers, mint, now_ms):
            if len(lbls) != len(want) or not chunks:
                continue
            ts, vals = decode_many([c[2] for c in chunks], mint, now_ms)
            if len(ts) and (best is None or int(ts[-1]) > best[0]):
                best = (int(ts[-1]), float(vals[-1]))
        return best

    async def stop(self) -> None:
        if self.lifecycle is not None:
            await self.lifecycle.shutdown()
        self.db.close()
        if self.bucket is not None:
            await self.bucket.close()
