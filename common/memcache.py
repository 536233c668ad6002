"""A small asyncio memcached client (text protocol): multi-get and async set over several servers.

The one client of promring: the store gateway's caches and the query frontend's results cache
both use it.

Caches must never make a query fail, so every operation is bounded by a timeout and every
error (refused connection, timeout, malformed reply) is counted and turned into "miss" / "not
stored" for the caller. Keys are spread over the servers with jump consistent hashing (as
Thanos's client does), so adding a server at the end of the list moves few keys. Connections
are pooled per server (at most ``max_idle_connections`` kept idle); a server that just failed
is skipped for a short back-off so a dead memcached costs one timeout, not one per query.
Metric names follow Thanos's cacheutil memcached client, with a ``name`` label per client.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

from common.units import parse_bytes, parse_duration_ms

MAX_KEY_LEN = 250  # memcached's limit
THIRTY_DAYS_S = 30 * 86400  # larger exptimes are read by memcached as unix times
OP_GET_MULTI, OP_SET = "getmulti", "set"
MAX_PENDING_BYTES = 64 << 20  # values queued for background sets, whatever their count
REASONS = ("timeout", "server-error", "network-error", "malformed-key", "other")


@dataclass
class MemcachedClientConfig:
    """Thanos's MemcachedClientConfig (the fields this client uses; defaults as Thanos's)."""

    addresses: list[str] = field(default_factory=list)
    timeout_s: float = 0.5
    max_idle_connections: int = 100
    max_async_concurrency: int = 20
    max_async_buffer_size: int = 10000
    max_get_multi_concurrency: int = 100
    max_get_multi_batch_size: int = 0
    max_item_size: int = 1 << 20
    dead_server_backoff_s: float = 1.0



# -- Thanos's cache YAML values and its MEMCACHED ``config:`` mapping (shared by the store
# gateway's index cache / caching bucket and the query frontend's results cache)

def size_field(v: object, what: str) -> int:
    """A byte size: an int or a unit string ("250MB", "1MiB"); ValueError names ``what``."""
    if isinstance(v, bool):
        raise ValueError(f"{what}: not a size: {v!r}")
    if isinstance(v, int):
        n = v
    elif isinstance(v, str):
        try:
            n = parse_bytes(v)
        except ValueError:
            raise ValueError(f"{what}: not a size: {v!r}") from None
    else:
        raise ValueError(f"{what}: not a size: {v!r}")
    if n < 0:
        raise ValueError(f"{what}: must not be negative")
    return n


def duration_field_s(v: object, what: str) -> float:
    """A duration in seconds from a Go duration string ("500ms") or a bare number, which Go's
    YAML reads as nanoseconds."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(f"{what}: not a duration: {v!r}")
    if isinstance(v, str):
        try:
            ms = parse_duration_ms(v)
        except ValueError:
            raise ValueError(f"{what}: not a duration: {v!r}") from None
        s = ms / 1000
    else:
        s = v / 1e9
    if s < 0:
        raise ValueError(f"{what}: must not be negative")
    return s


def int_field(v: object, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{what}: must be a non-negative integer, got {v!r}")
    return v


MEMCACHED_FIELDS = frozenset({
    "addresses", "timeout", "max_idle_connections", "max_async_concurrency",
    "max_async_buffer_size", "max_get_multi_concurrency", "max_item_size",
    "max_get_multi_batch_size", "dns_provider_update_interval", "auto_discovery",
    "set_async_circuit_breaker_config"})


def parse_memcached_config(conf: object, extra_fields: Iterable[str] = ()
                           ) -> MemcachedClientConfig:
    """Thanos's MEMCACHED ``config:`` mapping (fields it accepts that this client has no use
    for, e.g. the circuit breaker, are accepted and ignored; ``extra_fields`` are the caller's
    own). ``dns+host:port`` is connected to by name; SRV discovery is refused. ValueError says
    which field is wrong."""
    if not isinstance(conf, dict):
        raise ValueError("config: must be a mapping")
    bad = set(conf) - MEMCACHED_FIELDS - set(extra_fields)
    if bad:
        raise ValueError(f"config: unknown MEMCACHED fields {sorted(bad)}")
    addrs = conf.get("addresses") or []
    if not isinstance(addrs, list) or not addrs or not all(isinstance(a, str) for a in addrs):
        raise ValueError("config.addresses: a non-empty list of host:port is required")
    if any(a.startswith(("dnssrv+", "dnssrvnoa+")) for a in addrs):
        raise ValueError("config.addresses: DNS SRV service discovery is not supported")
    addrs = [a.removeprefix("dns+") for a in addrs]
    if not all(a.rpartition(":")[2].isdigit() and a.rpartition(":")[0] for a in addrs):
        raise ValueError("config.addresses: a non-empty list of host:port is required")
    d = MemcachedClientConfig()
    return MemcachedClientConfig(
        addresses=addrs,
        timeout_s=duration_field_s(conf.get("timeout", "500ms"), "timeout") or d.timeout_s,
        max_idle_connections=int_field(conf.get("max_idle_connections", 100),
                                       "max_idle_connections"),
        max_async_concurrency=int_field(conf.get("max_async_concurrency", 20),
                                        "max_async_concurrency") or d.max_async_concurrency,
        max_async_buffer_size=int_field(conf.get("max_async_buffer_size", 10000),
                                        "max_async_buffer_size") or d.max_async_buffer_size,
        max_get_multi_concurrency=int_field(conf.get("max_get_multi_concurrency", 100),
                                            "max_get_multi_concurrency"),
        max_get_multi_batch_size=int_field(conf.get("max_get_multi_batch_size", 0),
                                           "max_get_multi_batch_size"),
        max_item_size=size_field(conf.get("max_item_size", "1MiB"), "max_item_size"))


def shared_metric(registry: CollectorRegistry, cls, name: str, doc: str, labels: list[str],
                  **kw):
    """The ``name`` family already in ``registry`` or a new one: several caches of one
    process (index cache, caching bucket) share families and differ by their ``name`` label."""
    found = registry._names_to_collectors.get(name)  # noqa: SLF001 -- no public lookup
    return found if found is not None else cls(name, doc, labels, registry=registry, **kw)


class MemcachedMetrics:
    def __init__(self, registry: CollectorRegistry, name: str) -> None:
        self.name = name
        self.operations = shared_metric(registry, Counter, "thanos_memcached_operations",
                                        "Operations against memcached.", ["name", "operation"])
        self.failures = shared_metric(registry, Counter, "thanos_memcached_operation_failures",
                                      "Operations against memcached that failed.",
                                      ["name", "operation", "reason"])
        self.skipped = shared_metric(registry, Counter, "thanos_memcached_operation_skipped",
                                     "Operations not sent to memcached.",
                                     ["name", "operation", "reason"])
        self.duration = shared_metric(
            registry, Histogram, "thanos_memcached_operation_duration_seconds",
            "Duration of operations against memcached.", ["name", "operation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 3))
        for op in (OP_GET_MULTI, OP_SET):
            self.operations.labels(name, op)
            for r in REASONS:
                self.failures.labels(name, op, r)


class MemcacheError(Exception):
    """The server answered something that is not a valid reply."""


def jump_hash(key: int, buckets: int) -> int:
    """Lamping & Veach's jump consistent hash of a 64-bit ``key`` into [0, buckets)."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LEN and key.isascii() and key.isprintable() and " " not in key


class _Server:
    """One memcached address with its idle connections."""

    def __init__(self, address: str, max_idle: int) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.max_idle = max_idle
        self.down_until = 0.0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An idle connection still open (one the server closed, e.g. after its restart, is
        dropped, not used for a request), else a new one."""
        while self.idle:
            r, w = self.idle.pop()
            if not w.is_closing() and not r.at_eof():
                return r, w
            w.close()
        return await asyncio.open_connection(self.host, self.port)

    def release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        if len(self.idle) < self.max_idle and not conn[1].is_closing():
            self.idle.append(conn)
        else:
            conn[1].close()

    def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


class MemcachedClient:
    """get_multi / set_async against a memcached cluster; never raises on server trouble."""

    def __init__(self, cfg: MemcachedClientConfig, metrics: MemcachedMetrics) -> None:
        if not cfg.addresses:
            raise ValueError("no memcached addresses configured")
        self.cfg = cfg
        self._m = metrics
        self._servers = [_Server(a, cfg.max_idle_connections) for a in cfg.addresses]
        self._get_limit = asyncio.Semaphore(cfg.max_get_multi_concurrency or 1 << 30)
        self._set_limit = asyncio.Semaphore(max(1, cfg.max_async_concurrency))
        self._pending: set[asyncio.Task[bool]] = set()
        self._pending_bytes = 0

    def _server_for(self, key: str) -> _Server:
        if len(self._servers) == 1:
            return self._servers[0]
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
        return self._servers[jump_hash(h, len(self._servers))]

    def _fail(self, op: str, server: _Server, err: BaseException) -> None:
        if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
            reason = "timeout"
        elif isinstance(err, MemcacheError):
            reason = "server-error"
        elif isinstance(err, (OSError, asyncio.IncompleteReadError, ConnectionError)):
            reason = "network-error"
        else:
            reason = "other"
        self._m.failures.labels(self._m.name, op, reason).inc()
        if reason in ("timeout", "network-error"):
            server.down_until = time.monotonic() + self.cfg.dead_server_backoff_s
            server.close()

    def _is_down(self, server: _Server, op: str) -> bool:
        if server.down_until > time.monotonic():
            self._m.skipped.labels(self._m.name, op, "server-down").inc()
            return True
        return False

    # -- get

    async def get_multi(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Values of the ``keys`` found; missing, invalid or unreachable ones are left out."""
        by_server: dict[int, list[str]] = {}
        for k in dict.fromkeys(keys):
            if not valid_key(k):
                self._m.skipped.labels(self._m.name, OP_GET_MULTI, "malformed-key").inc()
                continue
            by_server.setdefault(id(self._server_for(k)), []).append(k)
        servers = {id(s): s for s in self._servers}
        n = self.cfg.max_get_multi_batch_size or 1 << 30
        jobs = [self._get_batch(servers[sid], ks[i:i + n])
                for sid, ks in by_server.items() for i in range(0, len(ks), n)]
        out: dict[str, bytes] = {}
        for part in await asyncio.gather(*jobs):
            out.update(part)
        return out

    async def _get_batch(self, server: _Server, keys: list[str]) -> dict[str, bytes]:
        if self._is_down(server, OP_GET_MULTI):
            return {}
        async with self._get_limit:
            self._m.operations.labels(self._m.name, OP_GET_MULTI).inc()
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(self.cfg.timeout_s):
                    conn = await server.connect()
                    try:
                        found = await self._get_on(conn, keys)
                    except BaseException:
                        conn[1].close()
                        raise
                    server.release(conn)
                    return found
            except (Exception, asyncio.TimeoutError) as e:  # noqa: BLE001 -- a cache miss
                self._fail(OP_GET_MULTI, server, e)
                return {}
            finally:
                self._m.duration.labels(self._m.name, OP_GET_MULTI).observe(
                    time.perf_counter() - t0)

    async def _get_on(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                      keys: list[str]) -> dict[str, bytes]:
        """One ``get`` of ``keys``; the reply is parsed from large reads (not a readline per
        value), each value bounded by max_item_size."""
        r, w = conn
        w.write(b"get " + " ".join(keys).encode() + b"\r\n")
        await w.drain()
        wanted = set(keys)
        limit = self.cfg.max_item_size + 1024 if self.cfg.max_item_size else 1 << 30
        out: dict[str, bytes] = {}
        buf = bytearray()
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > 1024:
                    raise MemcacheError("reply line too long")
                del buf[:pos]
                buf += await self._more(r)
                pos = 0
                continue
            line = buf[pos:eol]
            if line == b"END":
                if eol + 2 != len(buf):
                    raise MemcacheError("data after END")
                return out
            parts = line.split()
            if len(parts) < 4 or parts[0] != b"VALUE" or not parts[3].isdigit():
                raise MemcacheError(f"unexpected reply {line[:80]!r}")
            key, size = parts[1].decode("ascii", "replace"), int(parts[3])
            if size > limit or key not in wanted:
                raise MemcacheError(f"unexpected value header {line[:80]!r}")
            start, stop = eol + 2, eol + 2 + size
            while len(buf) < stop + 2:
                buf += await self._more(r)
            if buf[stop:stop + 2] != b"\r\n":
                raise MemcacheError("value not terminated by CRLF")
            out[key] = bytes(buf[start:stop])
            pos = stop + 2

    @staticmethod
    async def _more(r: asyncio.StreamReader) -> bytes:
        data = await r.read(1 << 18)
        if not data:
            raise ConnectionError("memcached closed the connection")
        return data

    # -- set

    def _unsendable(self, key: str, value: bytes) -> bool:
        """True (and counted as skipped) when memcached must not be asked to store this."""
        m = self._m
        if not valid_key(key):
            m.skipped.labels(m.name, OP_SET, "malformed-key").inc()
            return True
        if self.cfg.max_item_size and len(value) > self.cfg.max_item_size:
            m.skipped.labels(m.name, OP_SET, "max-item-size").inc()
            return True
        return False

    def set_async(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store in the background (bounded queue); dropped and counted if it cannot be."""
        m = self._m
        if self._unsendable(key, value):
            return
        if (len(self._pending) >= self.cfg.max_async_buffer_size
                or self._pending_bytes + len(value) > MAX_PENDING_BYTES):
            m.skipped.labels(m.name, OP_SET, "async-buffer-full").inc()
            return
        t = asyncio.get_running_loop().create_task(self.set(key, value, ttl_s))
        self._pending.add(t)
        self._pending_bytes += len(value)

        def done(task: asyncio.Task[bool], n: int = len(value)) -> None:
            self._pending.discard(task)
            self._pending_bytes -= n
        t.add_done_callback(done)

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store now (at most max_async_concurrency at once); False if not stored."""
        if self._unsendable(key, value):
            return False
        server = self._server_for(key)
        if self._is_down(server, OP_SET):
            return False
        ttl = int(ttl_s)
        exptime = ttl if ttl <= THIRTY_DAYS_S else int(time.time()) + ttl
        async with self._set_limit:
            self._m.operations.labels(self._m.name, OP_SET).inc()
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(self.cfg.timeout_s):
                    conn = await server.connect()
                    r, w = conn
                    try:
                        w.write(b"set %s 0 %d %d\r\n" % (key.encode(), exptime, len(value)))
                        w.write(value)
                        w.write(b"\r\n")
                        await w.drain()
                        line = await r.readline()
                    except BaseException:
                        w.close()
                        raise
                    if line != b"STORED\r\n":
                        w.close()  # after an error reply the stream state is unknown
                        raise MemcacheError(f"set refused: {line[:80]!r}")
                    server.release(conn)
                    return True
            except (Exception, asyncio.TimeoutError) as e:  # noqa: BLE001 -- not stored
                self._fail(OP_SET, server, e)
                return False
            finally:
                self._m.duration.labels(self._m.name, OP_SET).observe(time.perf_counter() - t0)

    async def flush(self) -> None:
        """Until the background sets queued so far are done (tests, a clean stop)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        """Give queued sets a few seconds to finish (a clean stop keeps the cache warm)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=max(5.0, self.cfg.timeout_s))
        for t in list(self._pending):
            t.cancel()
        await asyncio.gather(*list(self._pending), return_exceptions=True)
        for s in self._servers:
            s.close()
