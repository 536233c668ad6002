"""Object storage for blocks: one async Bucket contract over a local directory or S3.

Mirrors Thanos's objstore so the same bucket YAML and layout work for both systems. The S3
backend (boto3) is imported only when used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bucket import (
    DIR_DELIM,
    AccessDenied,
    Bucket,
    BucketError,
    InvalidObjectName,
    ObjectAttributes,
    ObjectNotFound,
    PrefixedBucket,
    UploadData,
    is_access_denied,
    is_not_found,
    with_prefix,
)
from .config import ConfigError, bucket_from_config, bucket_from_config_file, parse_config
from .filesystem import FilesystemBucket

if TYPE_CHECKING:
    from .s3 import S3Bucket, S3Config

__all__ = [
    "DIR_DELIM", "AccessDenied", "Bucket", "BucketError", "ConfigError", "FilesystemBucket",
    "InvalidObjectName", "ObjectAttributes", "ObjectNotFound", "PrefixedBucket", "S3Bucket",
    "S3Config", "UploadData", "bucket_from_config", "bucket_from_config_file", "is_access_denied",
    "is_not_found", "parse_config", "with_prefix",
]


def __getattr__(name: str) -> Any:
    # Lazy so that importing objstore does not require boto3 unless S3 is used.
    if name in ("S3Bucket", "S3Config"):
        from . import s3

        return getattr(s3, name)
    raise AttributeError(f"module 'objstore' has no attribute {name!r}")
