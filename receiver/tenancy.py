"""Tenant IDs: where they come from in a request and which ones are allowed.

A tenant ID names a directory under ``--tsdb.path``, so it must be a single path component of a
safe length. Thanos only refuses IDs that are not one path component ("Tenant name not valid",
400); we keep its message and also cap the length at 150 characters and the charset at Cortex's
(letters, digits and ``!-_.*'()``), which no file system chokes on.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from common.tls import certificate_field

MAX_TENANT_ID_LENGTH = 150  # Cortex/Mimir's limit; well under the 255 bytes of a file name
_TENANT_CHARS = re.compile(r"[A-Za-z0-9!\-_.*'()]*")


class InvalidTenant(ValueError):
    """The request names a tenant that cannot be stored (a 400)."""


def validate_tenant(tenant: str) -> None:
    if not tenant:
        raise InvalidTenant("Tenant name not valid: empty tenant ID")
    if len(tenant) > MAX_TENANT_ID_LENGTH:
        raise InvalidTenant(f"Tenant name not valid: longer than {MAX_TENANT_ID_LENGTH} characters")
    if tenant in (".", ".."):
        raise InvalidTenant(f"Tenant name not valid: {tenant!r}")
    if not _TENANT_CHARS.fullmatch(tenant):
        bad = next(c for c in tenant if not _TENANT_CHARS.fullmatch(c))
        raise InvalidTenant(f"Tenant name not valid: {tenant!r} contains unsupported character {bad!r}")


def tenant_from_headers(headers: Mapping, header: str, default: str) -> str:
    """The request's valid tenant: the header's one value, else the default tenant.

    A header sent twice is refused rather than resolved: a proxy that appends its own tenant
    header after the client's must not let the client choose.
    """
    values = headers.getall(header, []) if hasattr(headers, "getall") else [headers.get(header)]
    values = [v for v in values if v is not None]
    if len(values) > 1:
        raise InvalidTenant(f"tenant header {header} appears {len(values)} times; send it once")
    tenant = values[0] if values and values[0] else default
    validate_tenant(tenant)
    return tenant


def tenant_from_certificate(cert: dict | None, field: str) -> str:
    """The tenant named by ``field`` of the verified client certificate (the tenant header is
    then ignored, as in Thanos): a request without a certificate, or whose certificate has no
    or several values of the field, is refused."""
    try:
        tenant = certificate_field(cert, field)
    except ValueError as e:
        raise InvalidTenant(str(e)) from None
    validate_tenant(tenant)
    return tenant
