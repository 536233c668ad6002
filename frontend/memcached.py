"""A small asyncio memcached client (text protocol: get/set) over several servers.

Keys go to servers by consistent hashing (a ring of virtual points), so adding or losing a
server moves only that server's share of keys. Every call is bounded by the timeout; a broken
connection is dropped, never reused. Errors are raised to the caller (the cache counts them
and treats them as misses)."""
from __future__ import annotations

import asyncio
import bisect
import hashlib

from common.ops import split_address

_POINTS_PER_SERVER = 160
_MAX_EXPIRATION_RELATIVE_S = 30 * 24 * 3600  # memcached: larger values are unix timestamps


class MemcachedError(Exception):
    """A server answered with an error, a connection failed, or a call timed out."""


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing of keys onto server addresses."""

    def __init__(self, servers: list[str]) -> None:
        points = sorted((_hash(f"{s}-{i}".encode()), s) for s in servers
                        for i in range(_POINTS_PER_SERVER))
        self._hashes = [h for h, _ in points]
        self._servers = [s for _, s in points]

    def server_for(self, key: bytes) -> str:
        i = bisect.bisect(self._hashes, _hash(key)) % len(self._hashes)
        return self._servers[i]


class _Pool:
    """Idle connections to one server, at most ``max_idle`` kept."""

    def __init__(self, address: str, max_idle: int) -> None:
        self.host, self.port = split_address(address)
        self.max_idle = max_idle
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
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
    def __init__(self, addresses: list[str], timeout_s: float = 0.5, max_idle: int = 100,
                 max_value_bytes: int = 64 << 20) -> None:
        if not addresses:
            raise ValueError("memcached: no addresses")
        self.ring = HashRing(addresses)
        self.timeout_s = timeout_s
        self.max_value_bytes = max_value_bytes
        self._pools = {a: _Pool(a, max_idle) for a in addresses}

    async def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""
        return await self._call(key, b"get " + key + b"\r\n", self._read_get)

    async def set(self, key: bytes, value: bytes, expiration_s: int) -> None:
        exp = min(expiration_s, _MAX_EXPIRATION_RELATIVE_S)
        cmd = b"set %s 0 %d %d\r\n%s\r\n" % (key, exp, len(value), value)
        await self._call(key, cmd, self._read_set)

    async def close(self) -> None:
        for p in self._pools.values():
            p.close()

    async def _call(self, key: bytes, cmd: bytes, read):
        if len(key) > 250 or any(c <= 32 or c == 127 for c in key):
            raise MemcachedError("invalid key")
        pool = self._pools[self.ring.server_for(key)]
        conn = None
        try:
            async with asyncio.timeout(self.timeout_s):
                conn = await pool.acquire()
                conn[1].write(cmd)
                await conn[1].drain()
                result = await read(conn[0])
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, MemcachedError) as e:
            if conn is not None:
                conn[1].close()
            raise MemcachedError(f"{pool.host}:{pool.port}: {type(e).__name__}: {e}") from None
        pool.release(conn)
        return result

    async def _read_get(self, r: asyncio.StreamReader) -> bytes | None:
        line = await r.readuntil(b"\r\n")
        if line == b"END\r\n":
            return None
        parts = line.split()
        if len(parts) < 4 or parts[0] != b"VALUE" or not parts[3].isdigit():
            raise MemcachedError(line[:200].decode(errors="replace").strip())
        if int(parts[3]) > self.max_value_bytes:  # never buffer more than we would have stored
            raise MemcachedError(f"value of {int(parts[3])} bytes is larger than allowed")
        data = await r.readexactly(int(parts[3]) + 2)
        if await r.readuntil(b"\r\n") != b"END\r\n":
            raise MemcachedError("missing END")
        return data[:-2]

    @staticmethod
    async def _read_set(r: asyncio.StreamReader) -> None:
        line = await r.readuntil(b"\r\n")
        if line not in (b"STORED\r\n", b"NOT_STORED\r\n"):
            # SERVER_ERROR object too large etc.: the value was not stored, nothing broken.
            raise MemcachedError(line[:200].decode(errors="replace").strip())
