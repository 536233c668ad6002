"""Metric metadata (type, help, unit) from remote write, kept per tenant and served over
Thanos's Metadata gRPC API.

Prometheus sends metadata in requests of their own (WriteRequest field 3, no series), every
``metadata_config.send_interval``. Per tenant the latest entry of each metric family wins; a
tenant holds at most ``max_per_tenant`` families (new ones past that are dropped, existing
ones still update). A tenant's table is saved as one JSON file under
``<tsdb path>/.metadata/`` (written in a worker thread, replaced atomically) when it changed,
and read back at start, so metadata survives restarts without going through the WAL.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from storeapi import remote_pb2

log = logging.getLogger(__name__)

DEFAULT_MAX_PER_TENANT = 50_000
DEFAULT_MAX_BYTES_PER_TENANT = 32 << 20  # names + help + unit of one tenant's table
MAX_TEXT_BYTES = 16 << 10  # help/unit past this are cut (a bound, not a Prometheus limit)
# prompb MetricMetadata.MetricType, as Prometheus's metadata API spells the types.
TYPE_NAMES = ("unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info",
              "stateset")

Meta = tuple[str, str, str]  # (type, help, unit)


def decode_metadata(raw: bytes) -> list[tuple[str, Meta]]:
    """The metadata entries of an uncompressed WriteRequest, as (family, (type, help, unit));
    entries without a name are skipped. Raises ValueError if the request does not parse."""
    try:
        req = remote_pb2.WriteRequest.FromString(raw)
    except DecodeError as e:
        raise ValueError(f"malformed remote-write metadata: {e}") from None
    out = []
    for m in req.metadata:
        if not m.metric_family_name:
            continue
        kind = TYPE_NAMES[m.type] if 0 <= m.type < len(TYPE_NAMES) else "unknown"
        out.append((m.metric_family_name, (kind, m.help[:MAX_TEXT_BYTES], m.unit[:MAX_TEXT_BYTES])))
    return out


def _size(name: str, meta: Meta) -> int:
    return len(name) + len(meta[0]) + len(meta[1]) + len(meta[2])


@dataclass
class TenantMetadata:
    families: dict[str, Meta] = field(default_factory=dict)
    size: int = 0     # characters held, see DEFAULT_MAX_BYTES_PER_TENANT
    dropped: int = 0  # entries refused because the tenant was full


class MetadataStore:
    def __init__(self, root: Path, max_per_tenant: int = DEFAULT_MAX_PER_TENANT,
                 max_bytes_per_tenant: int = DEFAULT_MAX_BYTES_PER_TENANT) -> None:
        self.dir = root / ".metadata"
        self.max_per_tenant = max_per_tenant
        self.max_bytes = max_bytes_per_tenant
        self.tenants: dict[str, TenantMetadata] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def load(self) -> None:
        """Read every saved tenant table; a broken file is logged and skipped (never fatal)."""
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.json")):
            try:
                raw = json.loads(path.read_bytes())
                fams = {str(k): (str(v[0]), str(v[1]), str(v[2])) for k, v in raw.items()}
            except (OSError, ValueError, TypeError, IndexError, AttributeError) as e:
                log.warning("skipping unreadable metadata file", extra={"path": str(path),
                                                                        "error": str(e)})
                continue
            self.update(path.stem, list(fams.items()))

    def update(self, tenant: str, entries: list[tuple[str, Meta]]) -> bool:
        """Apply entries (latest wins); True if the tenant's table changed."""
        t = self.tenants.setdefault(tenant, TenantMetadata())
        changed = False
        for name, meta in entries:
            old = t.families.get(name)
            if old == meta:
                continue
            grow = _size(name, meta) - (_size(name, old) if old is not None else 0)
            if (old is None and len(t.families) >= self.max_per_tenant) or \
                    t.size + grow > self.max_bytes:
                t.dropped += 1
                continue
            t.families[name] = meta
            t.size += grow
            changed = True
        return changed

    async def save(self, tenant: str) -> None:
        """Write the tenant's table in a worker thread (one writer per tenant at a time)."""
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            snapshot = dict(self.tenants[tenant].families)
            await asyncio.to_thread(self._write, tenant, snapshot)

    def _write(self, tenant: str, families: dict[str, Meta]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{tenant}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(json.dumps(families, separators=(",", ":")).encode())
        os.replace(tmp, path)

    def query(self, metric: str = "", limit: int = -1) -> dict[str, list[Meta]]:
        """Family -> its distinct metadata over all tenants; ``limit`` >= 0 caps the families."""
        out: dict[str, list[Meta]] = {}
        for t in self.tenants.values():
            items = [(metric, t.families[metric])] if metric in t.families else [] \
                if metric else t.families.items()
            for name, meta in items:
                if name not in out and 0 <= limit <= len(out):
                    continue
                metas = out.setdefault(name, [])
                if meta not in metas:
                    metas.append(meta)
        return out


METADATA_SERVICE = "thanos.Metadata"


def metadata_handler(store: MetadataStore):
    """``thanos.Metadata/MetricMetadata`` over ``store``: one response with every match."""
    import grpc

    from storeapi import metadata_pb2

    async def metric_metadata(req: metadata_pb2.MetricMetadataRequest, _ctx):
        found = store.query(req.metric, req.limit if req.limit >= 0 else -1)
        msg = metadata_pb2.MetricMetadata()
        for name, metas in found.items():
            msg.metadata[name].metas.extend(
                metadata_pb2.Meta(type=t, help=h, unit=u) for t, h, u in metas)
        yield metadata_pb2.MetricMetadataResponse(metadata=msg)

    return grpc.method_handlers_generic_handler(METADATA_SERVICE, {
        "MetricMetadata": grpc.unary_stream_rpc_method_handler(
            metric_metadata, metadata_pb2.MetricMetadataRequest.FromString,
            metadata_pb2.MetricMetadataResponse.SerializeToString)})
