"""Start-up checks of flag values: a bad value is one line on stderr and exit 2, before any
directory is created, WAL replayed or socket bound (a process that starts and then answers
500 to every write is worse than one that refuses to start)."""
from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from common.units import (parse_base2_bytes, parse_bytes, parse_duration_ms, parse_label_flag,
                          parse_time_or_duration)

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class FlagError(ValueError):
    """A flag value that cannot work; the message names the flag."""


DURATION_HINT = "use a Prometheus duration like 30s, 5m, 2h, 15d or 1h30m"


def _duration(positive: bool) -> Callable[[str], None]:
    def check(v: str) -> None:
        try:
            ms = parse_duration_ms(v)
        except (ValueError, OverflowError):
            raise ValueError(f"not a duration; {DURATION_HINT}") from None
        if ms < 0 or (positive and ms == 0):
            raise ValueError("must be greater than 0" if positive else "must not be negative")
    return check


def _signed_duration(v: str) -> None:
    """A duration that may be negative (``-1s``: "every query")."""
    _duration(positive=False)(v.removeprefix("-"))


def _size(v: str) -> None:
    n = parse_bytes(v)
    if n <= 0:
        raise ValueError("must be greater than 0")


def _at_least_one(v: int) -> None:
    if v < 1:
        raise ValueError("must be at least 1")


def _positive_count(v: str | int) -> None:
    """A whole number, 1 or more (the bucket tools parse theirs as int already)."""
    if not re.fullmatch(r"[0-9]+", str(v).strip()) or int(v) < 1:
        raise ValueError("must be a whole number, at least 1")


def _count(v: str | None) -> None:
    """A whole number, 0 or more (Thanos's uint64 limits; 0 switches the limit off);
    None: a deprecated spelling not given."""
    if v is not None and not re.fullmatch(r"[0-9]+", v.strip()):
        raise ValueError("must be a whole number, 0 or more (0: no limit)")


def _time_or_duration(v: str) -> None:
    try:
        parse_time_or_duration(v)
    except (ValueError, OverflowError):
        raise ValueError("use an RFC3339 time like 2024-01-01T00:00:00Z or a duration "
                         "relative to now like -2w or 1h30m") from None


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
    if v:
        _read(v)


def _read(path: str) -> str:
    """The file's text, or ValueError saying why it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise ValueError("no such file")
    if p.is_dir():
        raise ValueError("is a directory, not a file")
    try:
        return p.read_text()
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError("not a text file") from None


def load_yaml(text: str) -> Any:
    """Parsed YAML, or ValueError naming the line and column (never ``"<unicode string>"``)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "invalid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"{where}not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML: {e}") from None


def _yaml_file(v: str | None) -> None:
    if v:
        load_yaml(_read(v))


def _limits_file(v: str | None) -> None:
    if v is not None:
        text = _read(v)
        load_yaml(text)
        from receiver.limits import parse_limits
        parse_limits(text)


def _hashrings_file(v: str | None) -> None:
    if v is not None:
        from receiver.hashring.config import parse_hashrings
        parse_hashrings(_read(v))


def _http_config(v: str) -> None:
    if v:
        load_yaml(_read(v))
        from common.webconfig import load_web_config
        load_web_config(v)


def _writable_dir(v: str) -> None:
    """The directory exists and is writable, or can be created under a writable one."""
    p = Path(v).absolute()
    while not p.exists():
        if p.is_symlink():
            raise ValueError(f"{p} is a dangling symbolic link")
        p = p.parent
    if not p.is_dir():
        raise ValueError(f"{p} is a file, not a directory" if str(p) != str(Path(v).absolute())
                         else "is a file, not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"{p} is not writable")


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
    "tsdb_path": ("--tsdb.path", _writable_dir),
    "data_dir": ("--data-dir", _writable_dir),
    "http_config": ("--http.config", _http_config),
    "endpoint_sd_config_file": ("--endpoint.sd-config-file", _yaml_file),
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
    "rejected_log_interval": ("--receive.rejected-log-interval", _duration(positive=False)),
    "slow_query": ("--query.log-queries-longer-than", _signed_duration),
    "too_far_in_future": ("--tsdb.too-far-in-future.time-window", _duration(positive=False)),
    "sync_block_duration": ("--sync-block-duration", _duration(positive=True)),
    "block_sync_concurrency": ("--block-sync-concurrency", _positive_count),
    "store_response_timeout": ("--store.response-timeout", _duration(positive=False)),
    "sd_interval": ("--store.sd-interval", _duration(positive=True)),
    "endpoint_sd_config_interval": ("--endpoint.sd-config-reload-interval",
                                    _duration(positive=True)),
    "wait_interval": ("--wait-interval", _duration(positive=True)),
    "delete_delay": ("--delete-delay", _duration(positive=False)),
    "consistency_delay": ("--consistency-delay", _duration(positive=False)),
    "retention_raw": ("--retention.resolution-raw", _duration(positive=False)),
    "retention_5m": ("--retention.resolution-5m", _duration(positive=False)),
    "retention_1h": ("--retention.resolution-1h", _duration(positive=False)),
    "partial_upload_age": ("--compact.partial-upload-age", _duration(positive=False)),
    "refresh": ("--refresh", _duration(positive=True)),
    "request_series": ("--store.limits.request-series", _count),
    "request_samples": ("--store.limits.request-samples", _count),
    "touched_series_limit": ("--store.grpc.touched-series-limit", _count),
    "series_sample_limit": ("--store.grpc.series-sample-limit", _count),
    "series_max_concurrency": ("--store.grpc.series-max-concurrency", _count),
    "downloaded_bytes_limit": ("--store.grpc.downloaded-bytes-limit", parse_base2_bytes),
    "ignore_deletion_marks_delay": ("--ignore-deletion-marks-delay", _duration(positive=False)),
    "min_time": ("--min-time", _time_or_duration),
    "max_time": ("--max-time", _time_or_duration),
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
    if hasattr(a, "min_time") and hasattr(a, "max_time"):
        if parse_time_or_duration(a.min_time)() > parse_time_or_duration(a.max_time)():
            raise FlagError(f"invalid argument: --min-time {a.min_time!r} can't be greater than "
                            f"--max-time {a.max_time!r}")



def _objstore(a: argparse.Namespace) -> None:
    """The bucket configuration parses and names a supported type, before anything starts."""
    if not hasattr(a, "objstore_config_file"):
        return
    from objstore.config import SUPPORTED_TYPES, ConfigError, parse_config
    from objstore.flags import objstore_yaml
    flag = "--objstore.config-file" if a.objstore_config_file else "--objstore.config"
    try:
        text = objstore_yaml(a)
    except SystemExit as e:
        raise FlagError(str(e.code)) from None
    if text is None:
        return
    where = f"{flag} {a.objstore_config_file}" if a.objstore_config_file else flag
    try:
        kind, provider, _ = parse_config(load_yaml(text))
        if kind not in SUPPORTED_TYPES:
            raise ValueError(f"bucket type {kind} is not supported; use one of "
                             f"{', '.join(SUPPORTED_TYPES)}")
        if kind == "FILESYSTEM":
            from objstore.config import FilesystemConfig, decode
            if not decode(FilesystemConfig, provider, "FILESYSTEM config").directory:
                raise ValueError("FILESYSTEM config: missing directory")
        else:
            from objstore.s3 import S3Config
            S3Config.from_dict(provider)
    except (ValueError, ConfigError) as e:
        raise FlagError(f"invalid {where}: {e}") from None


def _bind_check(host: str, port: int) -> None:
    """Bind and release ``host:port`` so a port in use stops the start before WAL replay."""
    host = host.strip("[]") or None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve host {host!r}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise ValueError(f"cannot listen there: {e.strerror}") from None


_WILDCARD = {"", "0.0.0.0", "[::]", "::"}
ADDRESS_FLAGS = {"remote_write_address": "--remote-write.address", "grpc_address": "--grpc-address",
                 "http_address": "--http-address"}


def _listen_addresses(a: argparse.Namespace) -> None:
    seen: dict[int, tuple[str, str]] = {}  # port -> (host, flag)
    for dest, flag in ADDRESS_FLAGS.items():
        value = getattr(a, dest, "")
        if not value:
            continue
        host, _, port = value.rpartition(":")
        if int(port) == 0:
            continue
        other_host, other = seen.get(int(port), (None, ""))
        if other_host is not None and (host == other_host or _WILDCARD & {host, other_host}):
            raise FlagError(f"{flag} and {other} both use port {port}; give each server its "
                            "own port")
        seen[int(port)] = (host, flag)
        try:
            _bind_check(host, int(port))
        except ValueError as e:
            raise FlagError(f"invalid value {value!r} for {flag}: {e}") from None


def _server_tls(a: argparse.Namespace) -> None:
    """TLS files exist and load (a certificate that does not match its key stops the start)."""
    from common.tls import build_server_context, server_tls_from_flags
    for prefix in ("grpc-server", "remote-write.server"):
        try:
            cfg = server_tls_from_flags(a, prefix)
            if cfg is not None and cfg.enabled:
                build_server_context(cfg)
        except ValueError as e:
            text = str(e)
            if "PEM lib" in text or "KEY_VALUES_MISMATCH" in text or "NO_START_LINE" in text:
                text = (f"--{prefix}-tls-cert/--{prefix}-tls-key: cannot load "
                        f"{cfg.cert} with {cfg.key}: expected a PEM certificate and its PEM "
                        "private key")
            raise FlagError(text) from None


def check_environment(a: argparse.Namespace) -> None:
    """Checks beyond single values: the bucket config, TLS files and free listen ports."""
    _objstore(a)
    _server_tls(a)
    _listen_addresses(a)
