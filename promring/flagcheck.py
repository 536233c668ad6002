"""Start-up checks of flag values: a bad value is one line on stderr and exit 2, before any
directory is created, WAL replayed or socket bound (a process that starts and then answers
500 to every write is worse than one that refuses to start)."""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from common.units import parse_bytes, parse_duration_ms, parse_label_flag

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class FlagError(ValueError):
    """A flag value that cannot work; the message names the flag."""


def _duration(positive: bool) -> Callable[[str], None]:
    def check(v: str) -> None:
        try:
            ms = parse_duration_ms(v)
        except (ValueError, OverflowError):
            raise ValueError("not a duration like 30s, 5m or 2h") from None
        if ms < 0 or (positive and ms == 0):
            raise ValueError("must be greater than 0" if positive else "must not be negative")
    return check


def _size(v: str) -> None:
    n = parse_bytes(v)
    if n <= 0:
        raise ValueError("must be greater than 0")


def _at_least_one(v: int) -> None:
    if v < 1:
        raise ValueError("must be at least 1")


def _address(v: str) -> None:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port with a port from 0 to 65535")


def _label_name(v: str) -> None:
    if not _LABEL_NAME.fullmatch(v):
        raise ValueError("is not a valid label name")


def _labels(vs: list[str]) -> None:
    for v in vs:
        name, _ = parse_label_flag(v)
        if not _LABEL_NAME.fullmatch(name):
            raise ValueError(f"{name!r} in {v!r} is not a valid label name")


def _header(v: str) -> None:
    if not _HTTP_TOKEN.fullmatch(v):
        raise ValueError("is not a valid HTTP header name")


def _tenant(v: str) -> None:
    from receiver.tenancy import validate_tenant
    validate_tenant(v)


def _readable_file(v: str | None) -> None:
    if v is not None and not Path(v).is_file():
        raise ValueError("no such file")


def _limits_file(v: str | None) -> None:
    if v is not None:
        _readable_file(v)
        from receiver.limits import parse_limits
        parse_limits(Path(v).read_text())


def _hashrings_file(v: str | None) -> None:
    if v is not None:
        _readable_file(v)
        from receiver.hashring.config import parse_hashrings
        parse_hashrings(Path(v).read_text())


# dest -> (flag as the user typed it, check). Only dests present on the namespace are checked.
CHECKS: dict[str, tuple[str, Callable]] = {
    "remote_write_address": ("--remote-write.address", _address),
    "grpc_address": ("--grpc-address", _address),
    "http_address": ("--http-address", _address),
    "capnproto_address": ("--receive.capnproto-address", _address),
    "labels": ("--label", _labels),
    "tenant_header": ("--receive.tenant-header", _header),
    "default_tenant": ("--receive.default-tenant-id", _tenant),
    "tenant_label_name": ("--receive.tenant-label-name", _label_name),
    "max_request_size": ("--receive.max-request-size", _size),
    "min_block_duration": ("--tsdb.min-block-duration", _duration(positive=True)),
    "max_block_duration": ("--tsdb.max-block-duration", _duration(positive=True)),
    "tsdb_retention": ("--tsdb.retention", _duration(positive=False)),
    "ooo_time_window": ("--tsdb.out-of-order.time-window", _duration(positive=False)),
    "objstore_config_file": ("--objstore.config-file", _readable_file),
    "limits_file": ("--receive.limits-config-file", _limits_file),
    "hashrings_file": ("--receive.hashrings-file", _hashrings_file),
    "hashrings_refresh": ("--receive.hashrings-file-refresh-interval", _duration(positive=True)),
    "replication_factor": ("--receive.replication-factor", _at_least_one),
    "forward_timeout": ("--receive-forward-timeout", _duration(positive=True)),
    "lookback_delta": ("--query.lookback-delta", _duration(positive=True)),
    "query_timeout": ("--query.timeout", _duration(positive=True)),
    "max_concurrent": ("--query.max-concurrent", _at_least_one),
    "max_samples": ("--query.max-samples", _at_least_one),
    "query_tenant_header": ("--query.tenant-header", _header),
    "query_default_tenant": ("--query.default-tenant-id", _tenant),
    "query_tenant_label": ("--query.tenant-label-name", _label_name),
}


# (command, dest) whose empty value switches that server off instead of being an error.
EMPTY_DISABLES = {("compact", "http_address"), ("query", "grpc_address")}


def check_flags(a: argparse.Namespace) -> None:
    """Raise FlagError for the first flag whose value cannot work."""
    for dest, (flag, check) in CHECKS.items():
        if not hasattr(a, dest):
            continue
        value = getattr(a, dest)
        if value == "" and (getattr(a, "command", None), dest) in EMPTY_DISABLES:
            continue
        try:
            check(value)
        except (ValueError, OSError) as e:
            raise FlagError(f"invalid value {value!r} for {flag}: {e}") from None
    if hasattr(a, "min_block_duration") and hasattr(a, "max_block_duration"):
        lo, hi = parse_duration_ms(a.min_block_duration), parse_duration_ms(a.max_block_duration)
        if hi < lo:
            raise FlagError(f"--tsdb.max-block-duration ({a.max_block_duration}) must not be shorter "
                            f"than --tsdb.min-block-duration ({a.min_block_duration})")

