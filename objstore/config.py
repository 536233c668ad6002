"""Build a bucket from Thanos's objstore YAML (``--objstore.config`` / ``--objstore.config-file``).

    type: S3            # or FILESYSTEM (case-insensitive, as in Thanos)
    config: {...}       # provider fields, parsed strictly: a typo is an error, not a silent default
    prefix: tenant-a    # optional; every object lives under "tenant-a/"

Providers are imported lazily so that a FILESYSTEM setup never needs boto3.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from typing import Any, Mapping

import yaml

from .bucket import DIR_DELIM, Bucket, check_name, with_prefix

SUPPORTED_TYPES = ("FILESYSTEM", "S3")
# Thanos providers we recognise but do not implement, so the error can say so plainly.
_THANOS_ONLY_TYPES = ("GCS", "AZURE", "SWIFT", "COS", "ALIYUNOSS", "BOS", "OCI", "OBS")


class ConfigError(ValueError):
    """The objstore configuration is malformed or names something unsupported."""


# -- Prometheus-style durations ("90s", "2m", "1h30m", "500ms") -----------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
                   "y": 31536000.0}
_DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from a Prometheus duration string; plain numbers are taken as seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a duration like '90s', got {value!r}")
    if value == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(value):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(value):
        raise ConfigError(f"{where}: not a valid duration: {value!r}")
    return total


# -- strict dataclass decoding -------------------------------------------------------------------

def duration_field(default: float) -> Any:
    """A dataclass field holding seconds, written in YAML as a Prometheus duration."""
    return dataclasses.field(default=default, metadata={"duration": True})


def decode(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, refusing unknown keys and wrong types.

    Mirrors Go's yaml.UnmarshalStrict, which Thanos uses, so configs written for Thanos fail
    loudly here on the same mistakes. YAML nulls mean "use the default".
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        f = fields[key]
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}", bool(f.metadata.get("duration")))
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, duration: bool) -> Any:
    if duration:
        return parse_duration(value, where)
    if dataclasses.is_dataclass(tp):
        return decode(tp, value, where)
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    raise TypeError(f"{where}: unsupported config field type {tp!r}")


# -- the top level -------------------------------------------------------------------------------

@dataclasses.dataclass
class FilesystemConfig:
    directory: str = ""


def parse_config(conf: str | bytes | Mapping[str, Any]) -> tuple[str, dict[str, Any], str]:
    """Split objstore YAML into ``(TYPE, provider config mapping, prefix)`` with validation."""
    if isinstance(conf, (str, bytes)):
        try:
            conf = yaml.safe_load(conf)
        except yaml.YAMLError as e:
            raise ConfigError(f"parsing objstore config YAML: {e}") from e
    if not isinstance(conf, Mapping):
        raise ConfigError("objstore config must be a mapping with 'type' and 'config'")
    unknown = sorted(str(k) for k in conf if k not in ("type", "config", "prefix"))
    if unknown:
        raise ConfigError(f"objstore config: unknown field(s) {', '.join(unknown)}; "
                          "known fields: config, prefix, type")
    kind = conf.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError("objstore config: missing 'type' (one of FILESYSTEM, S3)")
    kind = kind.upper()
    provider = conf.get("config") or {}
    if not isinstance(provider, Mapping):
        raise ConfigError("objstore config: 'config' must be a mapping")
    prefix = conf.get("prefix") or ""
    if not isinstance(prefix, str):
        raise ConfigError(f"objstore config: 'prefix' must be a string, got {prefix!r}")
    if prefix.strip(DIR_DELIM):
        try:
            check_name(prefix.strip(DIR_DELIM))
        except ValueError as e:
            raise ConfigError(f"objstore config: invalid prefix {prefix!r}: {e}") from e
    return kind, dict(provider), prefix


def bucket_from_config(conf: str | bytes | Mapping[str, Any]) -> Bucket:
    """A ready bucket from objstore YAML text or an already-parsed mapping."""
    kind, provider, prefix = parse_config(conf)
    bucket: Bucket
    if kind == "FILESYSTEM":
        fs_conf = decode(FilesystemConfig, provider, "FILESYSTEM config")
        if not fs_conf.directory:
            raise ConfigError("FILESYSTEM config: missing directory for filesystem bucket")
        from .filesystem import FilesystemBucket

        bucket = FilesystemBucket(fs_conf.directory)
    elif kind == "S3":
        from .s3 import S3Bucket, S3Config

        bucket = S3Bucket(S3Config.from_dict(provider))
    elif kind in _THANOS_ONLY_TYPES:
        raise ConfigError(f"bucket type {kind} is not supported by promring "
                          f"(supported: {', '.join(SUPPORTED_TYPES)})")
    else:
        raise ConfigError(f"bucket with type {kind} is not supported "
                          f"(supported: {', '.join(SUPPORTED_TYPES)})")
    return with_prefix(bucket, prefix)


def bucket_from_config_file(path: str | os.PathLike[str]) -> Bucket:
    with open(path, "rb") as f:
        return bucket_from_config(f.read())
