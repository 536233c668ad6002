"""S3 (and S3-compatible: MinIO, Ceph RGW, ...) bucket on boto3, configured like Thanos's S3 provider.

boto3 is synchronous, so every request runs in a worker thread of the bucket's own pool. Retries are
ours rather than botocore's: each request (and each part of a multipart upload) is retried with
capped exponential backoff and jitter on transient failures -- 5xx, throttling, timeouts, broken
connections -- and never on answers that will not change (404, 403, 400). Backoff sleeps happen
on the event loop, so a struggling S3 does not pin worker threads.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
from typing import Any, Callable, Mapping, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from .bucket import (
    DIR_DELIM,
    AccessDenied,
    BucketError,
    ObjectAttributes,
    ObjectNotFound,
    UploadData,
    check_name,
    check_range,
    dir_prefix,
)
from .config import ConfigError, decode, duration_field

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB  # S3 refuses smaller non-final parts
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
DEFAULT_MAX_RETRIES = 10  # minio-go's default, which Thanos inherits when max_retries is 0
UPLOAD_CONCURRENCY = 4  # parts in flight per upload, as Thanos pins for minio-go
CONNECT_TIMEOUT = 30.0  # Thanos's fixed dial timeout

SSE_S3, SSE_KMS, SSE_C = "SSE-S3", "SSE-KMS", "SSE-C"

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED_CODES = frozenset({"AccessDenied", "Forbidden", "403"})
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "BandwidthLimitExceeded", "RequestTimeout",
    "RequestTimeoutException", "InternalError", "ServiceUnavailable", "PriorRequestNotComplete",
})
_TRANSIENT_EXC = (
    botocore.exceptions.HTTPClientError,  # read timeouts, closed connections, broken bodies
    botocore.exceptions.ConnectionError,  # refused, connect timeouts, proxy failures
    botocore.exceptions.IncompleteReadError,
)


# -- configuration (field names are Thanos's YAML keys) ------------------------------------------

@dataclasses.dataclass
class TLSConfig:
    ca_file: str = ""
    trust_root_ca: bool = False
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False


@dataclasses.dataclass
class HTTPConfig:
    """Transport knobs. boto3 honours the timeouts, pool size and TLS settings; the remaining Go
    transport tunables are accepted so Thanos configs load, and have no effect here."""

    idle_conn_timeout: float = duration_field(90.0)
    response_header_timeout: float = duration_field(120.0)
    insecure_skip_verify: bool = False
    tls_handshake_timeout: float = duration_field(10.0)
    expect_continue_timeout: float = duration_field(1.0)
    max_idle_conns: int = 100
    max_idle_conns_per_host: int = 100
    max_conns_per_host: int = 0
    tls_config: TLSConfig = dataclasses.field(default_factory=TLSConfig)
    force_attempt_http2: bool = False
    disable_compression: bool = False


@dataclasses.dataclass
class SSEConfig:
    type: str = ""
    kms_key_id: str = ""
    kms_encryption_context: dict[str, str] = dataclasses.field(default_factory=dict)
    encryption_key: str = ""  # path of a file holding the raw 32-byte SSE-C key


@dataclasses.dataclass
class TraceConfig:
    """Accepted for Thanos compatibility; request tracing is the ``botocore`` logger at DEBUG."""

    enable: bool = False


@dataclasses.dataclass
class S3Config:
    bucket: str = ""
    endpoint: str = ""
    region: str = ""
    disable_dualstack: bool = False
    aws_sdk_auth: bool = False
    access_key: str = ""
    insecure: bool = False
    signature_version2: bool = False
    secret_key: str = ""
    session_token: str = ""
    put_user_metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    http_config: HTTPConfig = dataclasses.field(default_factory=HTTPConfig)
    trace: TraceConfig = dataclasses.field(default_factory=TraceConfig)
    list_objects_version: str = ""
    bucket_lookup_type: str = "auto"
    send_content_md5: bool = True
    disable_multipart: bool = False
    part_size: int = 64 * MIB
    sse_config: SSEConfig = dataclasses.field(default_factory=SSEConfig)
    sts_endpoint: str = ""
    max_retries: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "S3Config":
        conf: S3Config = decode(cls, data, "S3 config")
        conf.validate()
        return conf

    def validate(self) -> None:
        """Reject configs that cannot work, with the reason (as Thanos's validate does)."""
        if not self.bucket:
            raise ConfigError("S3 config: no s3 bucket in config")
        if not self.endpoint:
            raise ConfigError("S3 config: no s3 endpoint in config file")
        if "://" in self.endpoint or DIR_DELIM in self.endpoint:
            raise ConfigError(f"S3 config: endpoint must be host[:port] without scheme or path "
                              f"(use 'insecure: true' for http), got {self.endpoint!r}")
        if self.aws_sdk_auth and self.access_key:
            raise ConfigError("S3 config: aws_sdk_auth and access_key are mutually exclusive")
        if not self.access_key and self.secret_key:
            raise ConfigError("S3 config: no s3 access_key specified while secret_key is present")
        if self.access_key and not self.secret_key:
            raise ConfigError("S3 config: no s3 secret_key specified while access_key is present")
        sse = self.sse_config
        if sse.type not in ("", SSE_S3, SSE_KMS, SSE_C):
            raise ConfigError(f"S3 config: unsupported sse_config.type {sse.type!r}; "
                              f"supported are {SSE_S3}, {SSE_KMS}, {SSE_C}")
        if sse.type == SSE_KMS and not sse.kms_key_id:
            raise ConfigError("S3 config: kms_key_id must be set if sse_config.type is 'SSE-KMS'")
        if sse.type == SSE_C and not sse.encryption_key:
            raise ConfigError("S3 config: encryption_key must be set if sse_config.type is 'SSE-C'")
        if self.list_objects_version not in ("", "v1", "v2"):
            raise ConfigError(f"S3 config: unsupported list_objects_version "
                              f"{self.list_objects_version!r}; supported values are v1, v2")
        if self.bucket_lookup_type not in ("auto", "virtual-hosted", "path"):
            raise ConfigError(f"S3 config: unsupported bucket_lookup_type "
                              f"{self.bucket_lookup_type!r}; use auto, virtual-hosted or path")
        if not self.disable_multipart and not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ConfigError(f"S3 config: part_size {self.part_size} must be between "
                              f"{MIN_PART_SIZE} (5MiB) and {MAX_PART_SIZE} (5GiB)")
        if self.max_retries < 0:
            raise ConfigError("S3 config: max_retries must not be negative")
        tls = self.http_config.tls_config
        if bool(tls.cert_file) != bool(tls.key_file):
            raise ConfigError("S3 config: http_config.tls_config needs both cert_file and key_file")
        if tls.server_name:
            raise ConfigError("S3 config: http_config.tls_config.server_name is not supported")
        if self.sts_endpoint:
            raise ConfigError("S3 config: sts_endpoint is not supported; leave it empty to use "
                              "the AWS SDK's default credential chain")


# -- error handling ----------------------------------------------------------------------------

def _client_error_info(err: botocore.exceptions.ClientError) -> tuple[str, int]:
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def is_transient(err: BaseException) -> bool:
    """Worth retrying: the same request may succeed later (server trouble, throttling, network)."""
    if isinstance(err, botocore.exceptions.ClientError):
        code, status = _client_error_info(err)
        return status >= 500 or status == 429 or code in _TRANSIENT_CODES
    return isinstance(err, _TRANSIENT_EXC)


def _translate(err: Exception, op: str, name: str) -> Exception:
    """Map botocore failures onto the bucket error types; other errors pass through unchanged."""
    if isinstance(err, botocore.exceptions.ClientError):
        code, status = _client_error_info(err)
        if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            return ObjectNotFound(name)
        if code in _DENIED_CODES or status == 403:
            return AccessDenied(f"s3 {op} {name}: {err}")
        return BucketError(f"s3 {op} {name}: {err}")
    if isinstance(err, botocore.exceptions.BotoCoreError):
        return BucketError(f"s3 {op} {name}: {err}")
    return err


# -- the bucket ----------------------------------------------------------------------------------

class S3Bucket:
    """Bucket on an S3-compatible service.

    Requests run on the bucket's own thread pool of ``max_concurrency`` threads rather than the
    loop's default executor (a handful of threads on small machines, shared with everything
    else), so many parallel range reads can be in flight. ``backoff_base``/``backoff_max``
    (seconds) shape retries.
    """

    def __init__(self, config: S3Config, *, max_concurrency: int = 32, backoff_base: float = 0.1,
                 backoff_max: float = 5.0) -> None:
        config.validate()
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._conf = config
        self._bucket = config.bucket
        self._max_retries = config.max_retries or DEFAULT_MAX_RETRIES
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._write_args, self._read_args = _sse_args(config.sse_config)
        meta = dict(config.put_user_metadata)
        storage_class = ""
        for k in list(meta):
            if k.lower() == "x-amz-storage-class":
                storage_class = meta.pop(k)
        if meta:
            self._write_args["Metadata"] = meta
        if storage_class:
            self._write_args["StorageClass"] = storage_class
        self._client = _make_client(config, max_concurrency)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="s3")

    @property
    def name(self) -> str:
        return self._bucket

    @property
    def config(self) -> S3Config:
        return self._conf

    @property
    def client(self) -> Any:
        """The underlying botocore client (e.g. to register event hooks)."""
        return self._client

    async def _retry(self, op: str, name: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
            except Exception as e:  # noqa: BLE001 - classified below, re-raised translated
                if attempt >= self._max_retries or not is_transient(e):
                    translated = _translate(e, op, name)
                    if translated is e:
                        raise
                    raise translated from e
                delay = min(self._backoff_max, self._backoff_base * (2 ** attempt))
                delay *= random.uniform(0.5, 1.0)
                attempt += 1
                log.debug("retrying s3 request", extra={"op": op, "object": name,
                                                        "attempt": attempt, "err": str(e)})
                await asyncio.sleep(delay)

    # -- reads -------------------------------------------------------------------------------

    def _get_object(self, name: str, range_header: str | None) -> bytes:
        kw: dict[str, Any] = dict(self._read_args)
        if range_header:
            kw["Range"] = range_header
        try:
            resp = self._client.get_object(Bucket=self._bucket, Key=name, **kw)
        except botocore.exceptions.ClientError as e:
            code, status = _client_error_info(e)
            if range_header and (status == 416 or code == "InvalidRange"):
                return b""  # the object exists but the range starts at or past its end
            raise
        body = resp["Body"]
        try:
            return body.read()
        finally:
            body.close()

    async def get(self, name: str) -> bytes:
        check_name(name)
        return await self._retry("get", name, functools.partial(self._get_object, name, None))

    async def get_range(self, name: str, off: int, length: int) -> bytes:
        check_name(name)
        check_range(off, length)
        if length == 0:
            await self.attributes(name)  # still report a missing object
            return b""
        if length == -1:
            rng = f"bytes={off}-" if off > 0 else None
        else:
            rng = f"bytes={off}-{off + length - 1}"
        return await self._retry("get_range", name, functools.partial(self._get_object, name, rng))

    def _head(self, name: str) -> dict[str, Any]:
        return self._client.head_object(Bucket=self._bucket, Key=name, **self._read_args)

    async def exists(self, name: str) -> bool:
        check_name(name)
        try:
            await self._retry("exists", name, functools.partial(self._head, name))
        except ObjectNotFound:
            return False
        return True

    async def attributes(self, name: str) -> ObjectAttributes:
        check_name(name)
        head = await self._retry("attributes", name, functools.partial(self._head, name))
        return ObjectAttributes(int(head["ContentLength"]), head["LastModified"])

    def _list_page(self, prefix: str, recursive: bool, token: str | None) -> tuple[list[str], str | None]:
        """One listing page: (names, token for the next page or None)."""
        kw: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        if not recursive:
            kw["Delimiter"] = DIR_DELIM
        v1 = self._conf.list_objects_version == "v1"
        if token:
            kw["Marker" if v1 else "ContinuationToken"] = token
        resp = (self._client.list_objects if v1 else self._client.list_objects_v2)(**kw)
        names = [o["Key"] for o in resp.get("Contents", ())]
        names += [p["Prefix"] for p in resp.get("CommonPrefixes", ())]
        if not resp.get("IsTruncated"):
            return names, None
        if not v1:
            return names, resp.get("NextContinuationToken")
        # v1 sends NextMarker only with a delimiter; otherwise the last key is the marker.
        return names, resp.get("NextMarker") or (max(names) if names else None)

    async def iter(self, prefix: str = "", recursive: bool = False) -> list[str]:
        d = dir_prefix(prefix)
        # A set: some S3-compatible servers (moto's v1 listing, for one) repeat common prefixes
        # on every page.
        out: set[str] = set()
        token: str | None = None
        while True:
            names, token = await self._retry(
                "iter", d, functools.partial(self._list_page, d, recursive, token))
            out.update(n for n in names if n and n != d)  # S3 may list the "dir" marker itself
            if token is None:
                break
        return sorted(out)

    # -- writes ------------------------------------------------------------------------------

    def _put(self, name: str, data: UploadData) -> None:
        kw: dict[str, Any] = dict(self._write_args)
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data) if isinstance(data, memoryview) else data
            if self._conf.send_content_md5:
                kw["ContentMD5"] = _md5_b64(body)
            self._client.put_object(Bucket=self._bucket, Key=name, Body=body, **kw)
            return
        with open(os.fspath(data), "rb") as f:
            if self._conf.send_content_md5:
                h = hashlib.md5()
                for chunk in iter(functools.partial(f.read, MIB), b""):
                    h.update(chunk)
                kw["ContentMD5"] = base64.b64encode(h.digest()).decode()
                f.seek(0)
            self._client.put_object(Bucket=self._bucket, Key=name, Body=f, **kw)

    async def upload(self, name: str, data: UploadData) -> None:
        check_name(name)
        if isinstance(data, (bytes, bytearray, memoryview)):
            size = memoryview(data).nbytes
        else:
            size = (await asyncio.to_thread(os.stat, os.fspath(data))).st_size
        if self._conf.disable_multipart or size <= self._conf.part_size:
            await self._retry("upload", name, functools.partial(self._put, name, data))
        else:
            await self._multipart(name, data, size)

    def _read_part(self, data: UploadData, off: int, n: int) -> bytes:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(memoryview(data)[off:off + n])
        with open(os.fspath(data), "rb") as f:
            f.seek(off)
            return f.read(n)

    def _upload_part(self, name: str, upload_id: str, number: int, data: UploadData,
                     off: int, n: int) -> str:
        body = self._read_part(data, off, n)
        if len(body) != n:
            raise BucketError(f"upload {name}: source changed size while uploading")
        kw: dict[str, Any] = dict(self._read_args)  # SSE-C key must accompany every part
        if self._conf.send_content_md5:
            kw["ContentMD5"] = _md5_b64(body)
        resp = self._client.upload_part(Bucket=self._bucket, Key=name, UploadId=upload_id,
                                        PartNumber=number, Body=body, **kw)
        return str(resp["ETag"])

    async def _multipart(self, name: str, data: UploadData, size: int) -> None:
        """Upload in parts, each retried on its own, so a blip does not restart a huge object."""
        part = max(self._conf.part_size, math.ceil(size / MAX_PARTS))
        created = await self._retry("upload", name, functools.partial(
            self._client.create_multipart_upload, Bucket=self._bucket, Key=name, **self._write_args))
        upload_id = created["UploadId"]
        sem = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def one(number: int, off: int) -> dict[str, Any]:
            async with sem:
                etag = await self._retry("upload", name, functools.partial(
                    self._upload_part, name, upload_id, number, data, off, min(part, size - off)))
            return {"ETag": etag, "PartNumber": number}

        tasks = [asyncio.ensure_future(one(i + 1, off)) for i, off in enumerate(range(0, size, part))]
        try:
            try:
                parts = await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._retry("upload", name, functools.partial(
                self._client.complete_multipart_upload, Bucket=self._bucket, Key=name,
                UploadId=upload_id, MultipartUpload={"Parts": list(parts)}))
        except BaseException:
            # Leave no billed orphan parts behind; best effort, the original error matters more.
            try:
                await asyncio.shield(self._retry("upload", name, functools.partial(
                    self._client.abort_multipart_upload, Bucket=self._bucket, Key=name,
                    UploadId=upload_id)))
            except Exception as abort_err:  # noqa: BLE001
                log.warning("aborting multipart upload failed",
                            extra={"object": name, "err": str(abort_err)})
            raise

    async def delete(self, name: str) -> None:
        check_name(name)
        await self._retry("delete", name, functools.partial(
            self._client.delete_object, Bucket=self._bucket, Key=name))

    async def close(self) -> None:
        pool = self._pool
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        self._client.close()

    def __repr__(self) -> str:
        scheme = "http" if self._conf.insecure else "https"
        return f"S3Bucket({scheme}://{self._conf.endpoint}/{self._bucket})"


def _md5_b64(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _sse_args(sse: SSEConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(args for writes, args for reads); only SSE-C needs the key on reads too."""
    if sse.type == SSE_S3:
        return {"ServerSideEncryption": "AES256"}, {}
    if sse.type == SSE_KMS:
        w: dict[str, Any] = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": sse.kms_key_id}
        if sse.kms_encryption_context:
            ctx = json.dumps(sse.kms_encryption_context, sort_keys=True, separators=(",", ":"))
            w["SSEKMSEncryptionContext"] = base64.b64encode(ctx.encode()).decode()
        return w, {}
    if sse.type == SSE_C:
        try:
            with open(sse.encryption_key, "rb") as f:
                key = f.read()
        except OSError as e:
            raise ConfigError(f"S3 config: reading sse_config.encryption_key: {e}") from e
        if len(key) != 32:
            raise ConfigError(f"S3 config: SSE-C key must be 32 bytes, {sse.encryption_key} has {len(key)}")
        c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        return dict(c), dict(c)
    return {}, {}


def _make_client(conf: S3Config, max_concurrency: int) -> Any:
    http = conf.http_config
    tls = http.tls_config
    lookup = {"auto": "auto", "virtual-hosted": "virtual", "path": "path"}[conf.bucket_lookup_type]
    bcfg = botocore.config.Config(
        region_name=conf.region or "us-east-1",
        signature_version="s3" if conf.signature_version2 else "s3v4",
        s3={"addressing_style": lookup},
        retries={"total_max_attempts": 1, "mode": "standard"},  # we retry ourselves
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=http.response_header_timeout or None,
        # Never fewer pooled connections than threads, or connections get discarded and redialled.
        max_pool_connections=max(max_concurrency, http.max_idle_conns_per_host or 0),
        client_cert=(tls.cert_file, tls.key_file) if tls.cert_file else None,
        # Send checksums only where S3 demands them: many S3-compatible stores reject the
        # newer default trailing checksums. Content-MD5 is added by us when configured.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
        user_agent_extra="promring",
    )
    verify: bool | str | None = None
    if http.insecure_skip_verify or tls.insecure_skip_verify:
        verify = False
    elif tls.ca_file:
        verify = tls.ca_file
    creds: dict[str, str] = {}
    if conf.access_key and not conf.aws_sdk_auth:
        creds = {"aws_access_key_id": conf.access_key, "aws_secret_access_key": conf.secret_key}
        if conf.session_token:
            creds["aws_session_token"] = conf.session_token
    session = boto3.session.Session()  # private session: no shared default-session state
    return session.client(
        "s3",
        endpoint_url=f"{'http' if conf.insecure else 'https'}://{conf.endpoint}",
        config=bcfg,
        verify=verify,
        **creds,
    )
