"""A Bucket wrapper counting operations and bytes read with Thanos's objstore metric names, so
operators (and tests) see how much a component really asks of object storage."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from .bucket import Bucket, ObjectAttributes, UploadData

OPERATIONS = ("get", "get_range", "iter", "exists", "attributes", "upload", "delete")


class InstrumentedBucket:
    def __init__(self, bucket: Bucket, registry: CollectorRegistry, name: str = "") -> None:
        self._bkt = bucket
        b = name or getattr(bucket, "name", "") or ""
        self._ops = Counter("thanos_objstore_bucket_operations", "Bucket operations.",
                            ["bucket", "operation"], registry=registry)
        self._fails = Counter("thanos_objstore_bucket_operation_failures",
                              "Bucket operations that failed.", ["bucket", "operation"],
                              registry=registry)
        self._bytes = Counter("thanos_objstore_bucket_operation_fetched_bytes",
                              "Bytes read from the bucket.", ["bucket", "operation"],
                              registry=registry)
        self._op = {op: (self._ops.labels(b, op), self._fails.labels(b, op)) for op in OPERATIONS}
        self._read = {op: self._bytes.labels(b, op) for op in ("get", "get_range")}

    @property
    def name(self) -> str:
        return getattr(self._bkt, "name", "")

    def __getattr__(self, attr: str):
        return getattr(self._bkt, attr)

    async def _call(self, op: str, coro):
        ops, fails = self._op[op]
        ops.inc()
        try:
            return await coro
        except Exception:
            fails.inc()
            raise

    async def get(self, name: str) -> bytes:
        data = await self._call("get", self._bkt.get(name))
        self._read["get"].inc(len(data))
        return data

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        data = await self._call("get_range", self._bkt.get_range(name, off, length))
        self._read["get_range"].inc(len(data))
        return data

    async def iter(self, prefix: str = "", recursive: bool = False) -> list[str]:
        return await self._call("iter", self._bkt.iter(prefix, recursive))

    async def exists(self, name: str) -> bool:
        return await self._call("exists", self._bkt.exists(name))

    async def attributes(self, name: str) -> ObjectAttributes:
        return await self._call("attributes", self._bkt.attributes(name))

    async def upload(self, name: str, data: UploadData) -> None:
        await self._call("upload", self._bkt.upload(name, data))

    async def delete(self, name: str) -> None:
        await self._call("delete", self._bkt.delete(name))

    async def close(self) -> None:
        await self._bkt.close()
