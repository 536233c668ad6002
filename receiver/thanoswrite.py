"""Splits a forwarded ``thanos.WriteRequest`` into per-tenant remote-write bodies.

A WriteRequest carries series in two forms: the legacy one (field 1 ``timeseries`` of field 2
``tenant``) and, from current Thanos routers, field 4 ``timeseriesTenantData``: repeated
``TimeSeriesTenantTuple{timeseries = 1, tenant = 2}``, several tenants in one request. Both are
cut out of the raw bytes without decoding the series: field-1 elements are exactly a
prometheus.WriteRequest body, so the remote-write decoder reads them unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .hashring import _ringc


def _tuples_view():
    """A message that reads only field 4 of a WriteRequest, as raw bytes (field 1, the bulk, is
    skipped by the C parser instead of becoming millions of Python objects)."""
    f = descriptor_pb2.FileDescriptorProto(name="promring/thanos_write_view.proto",
                                           package="promring.view", syntax="proto3")
    m = f.message_type.add(name="TenantDataView")
    m.field.add(name="tuples", number=4, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("promring.view.TenantDataView"))


_TenantDataView = _tuples_view()


@dataclass(frozen=True)
class TenantWrite:
    tenant: str  # "" = the receiver's default tenant
    body: bytes  # an uncompressed prometheus.WriteRequest (only its field 1)


def split_thanos_write(data: bytes) -> tuple[list[TenantWrite], int]:
    """The per-tenant bodies of a thanos.WriteRequest (legacy form first, then each tuple in
    order; a tenant may appear more than once) and its replica number; ValueError if
    malformed."""
    body, tenant, replica = _ringc.split_write(data)
    tuples: list[TenantWrite] = []
    if b"\x22" in data:  # field 4's tag byte: without it there are no tuples (cheap pre-check)
        try:
            raw = _TenantDataView.FromString(data).tuples
        except Exception as e:  # noqa: BLE001 -- protobuf's DecodeError and friends
            raise ValueError(f"timeseriesTenantData: {e}") from None
        for t in raw:
            t_body, t_tenant, _ = _ringc.split_write(t)
            tuples.append(TenantWrite(t_tenant, t_body))
    legacy = [TenantWrite(tenant, body)] if body or not tuples else []
    return legacy + tuples, replica
