"""The objstore contract, run against a directory, a real moto S3 server, and prefixed views.

S3 runs against ``moto_server`` on loopback (tests/moto.py). Transient failures are injected the
way they happen: through botocore's own event hooks (a 503 answer, a refused connection) or by
really restarting the S3 server mid-request -- never by replacing the bucket code.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto import MotoNotInstalled, MotoServer, free_port  # noqa: E402  (tests/moto.py)

from objstore import (  # noqa: E402
    Bucket,
    BucketError,
    ConfigError,
    FilesystemBucket,
    InvalidObjectName,
    ObjectNotFound,
    PrefixedBucket,
    bucket_from_config,
    is_not_found,
    with_prefix,
)
from objstore.config import parse_duration  # noqa: E402
from objstore.filesystem import TMP_PREFIX  # noqa: E402

botocore = pytest.importorskip("botocore")
import botocore.awsrequest  # noqa: E402
import botocore.exceptions  # noqa: E402

from objstore.s3 import MIB, S3Bucket, S3Config  # noqa: E402


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer()
    try:
        server.start()
    except MotoNotInstalled as e:
        pytest.skip(f"moto_server is not installed: {e}")
    yield server
    server.stop()


def s3_config(server: MotoServer, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"bucket": bucket, "endpoint": server.endpoint, "insecure": True, "region": "us-east-1",
            "access_key": "test", "secret_key": "test", **extra}


def new_s3_bucket(server: MotoServer, **extra: Any) -> S3Bucket:
    name = "t-" + uuid.uuid4().hex[:12]
    server.create_bucket(name)
    return S3Bucket(S3Config.from_dict(s3_config(server, name, **extra)), backoff_base=0.01,
                    backoff_max=0.2)


@pytest.fixture(params=["fs", "s3", "prefixed-fs", "prefixed-s3"])
def bucket(request, tmp_path) -> Bucket:
    kind = request.param
    if kind.endswith("fs"):
        b: Bucket = FilesystemBucket(tmp_path / "bucket")
    else:
        b = new_s3_bucket(request.getfixturevalue("moto_server"))
    if kind.startswith("prefixed"):
        b = PrefixedBucket(b, "tenant/x")
    yield b
    run(b.close())


# -- the contract ----------------------------------------------------------------------------------

LAYOUT = {
    "01A/meta.json": b'{"ulid":"01A"}',
    "01A/index": b"index-bytes",
    "01A/chunks/000001": b"c1" * 100,
    "01A/chunks/000002": b"c2",
    "01B/meta.json": b"{}",
    "01B.json": b"sibling",  # '.' sorts before '/': checks plain lexical order
    "top": b"",
}


async def _fill(b: Bucket) -> None:
    await asyncio.gather(*(b.upload(k, v) for k, v in LAYOUT.items()))


def test_upload_get_overwrite(bucket, tmp_path):
    assert isinstance(bucket, Bucket)

    async def go():
        await bucket.upload("a/b/obj", b"hello")
        assert await bucket.get("a/b/obj") == b"hello"
        await bucket.upload("a/b/obj", bytearray(b"replaced"))
        assert await bucket.get("a/b/obj") == b"replaced"
        await bucket.upload("mv", memoryview(b"xxview")[2:])
        assert await bucket.get("mv") == b"view"
        await bucket.upload("empty", b"")
        assert await bucket.get("empty") == b""
        src = tmp_path / "src.bin"
        payload = os.urandom(300_001)
        src.write_bytes(payload)
        await bucket.upload("from/file", src)
        assert await bucket.get("from/file") == payload
    run(go())


def test_get_range(bucket):
    data = bytes(range(256)) * 4

    async def go():
        await bucket.upload("r", data)
        assert await bucket.get_range("r", 0, 10) == data[:10]
        assert await bucket.get_range("r", 100, 50) == data[100:150]
        assert await bucket.get_range("r", 1000, 100) == data[1000:]  # short at the end
        assert await bucket.get_range("r", 10, -1) == data[10:]
        assert await bucket.get_range("r", 0, -1) == data
        assert await bucket.get_range("r", len(data), 5) == b""
        assert await bucket.get_range("r", len(data) + 7, -1) == b""
        assert await bucket.get_range("r", 3, 0) == b""
        with pytest.raises(ValueError):
            await bucket.get_range("r", -1, 3)
    run(go())


def test_iter(bucket):
    async def go():
        await _fill(bucket)
        assert await bucket.iter() == ["01A/", "01B.json", "01B/", "top"]
        assert await bucket.iter("") == await bucket.iter()
        expect_a = ["01A/chunks/", "01A/index", "01A/meta.json"]
        assert await bucket.iter("01A") == expect_a
        assert await bucket.iter("01A/") == expect_a
        assert await bucket.iter("01A/chunks") == ["01A/chunks/000001", "01A/chunks/000002"]
        assert await bucket.iter(recursive=True) == sorted(LAYOUT)
        assert await bucket.iter("01A", recursive=True) == sorted(k for k in LAYOUT if k.startswith("01A/"))
        assert await bucket.iter("missing") == []
        assert await bucket.iter("top") == []  # an object is not a directory
        assert await bucket.iter("01") == []  # directory prefixes match whole path elements
    run(go())


def test_exists_delete_attributes(bucket):
    async def go():
        await _fill(bucket)
        assert await bucket.exists("01A/index")
        assert not await bucket.exists("01A")  # directories are not objects
        assert not await bucket.exists("nope")
        before = datetime.now(timezone.utc)
        await bucket.upload("01A/index", b"new index!")
        after = datetime.now(timezone.utc)
        size, modified = await bucket.attributes("01A/index")
        assert size == 10
        assert modified.tzinfo is not None
        assert before - timedelta(seconds=2) <= modified <= after + timedelta(seconds=2)

        await bucket.delete("01A/index")
        assert not await bucket.exists("01A/index")
        await bucket.delete("01A/index")  # deleting a missing object is fine
        for k in ("01A/meta.json", "01A/chunks/000001", "01A/chunks/000002"):
            await bucket.delete(k)
        assert await bucket.iter() == ["01B.json", "01B/", "top"]  # 01A/ vanished with its objects
    run(go())


def test_not_found(bucket):
    async def go():
        await bucket.upload("dir/present", b"x")
        for call in (bucket.get("dir/absent"), bucket.get_range("dir/absent", 0, 1),
                     bucket.get_range("dir/absent", 0, 0), bucket.attributes("dir/absent"),
                     bucket.get("dir")):
            with pytest.raises(ObjectNotFound) as ei:
                await call
            assert is_not_found(ei.value)
        assert not is_not_found(RuntimeError("x"))
    run(go())


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/../../etc/passwd", "..", "./a", "dir/", "a\x00b"])
def test_invalid_names(bucket, name):
    async def go():
        with pytest.raises(InvalidObjectName):
            await bucket.upload(name, b"x")
        with pytest.raises(InvalidObjectName):
            await bucket.get(name)
    run(go())


def test_concurrent_use(bucket):
    async def go():
        blobs = {f"many/{i:03d}": os.urandom(1000 + i) for i in range(40)}
        await asyncio.gather(*(bucket.upload(k, v) for k, v in blobs.items()))
        got = await asyncio.gather(*(bucket.get(k) for k in blobs))
        assert got == list(blobs.values())
        assert await bucket.iter("many") == sorted(blobs)
    run(go())


# -- filesystem specifics --------------------------------------------------------------------------

def test_fs_layout_atomic_and_hidden_temp_files(tmp_path):
    root = tmp_path / "b"
    b = FilesystemBucket(root)

    async def go():
        await b.upload("01A/chunks/000001", b"abc")
        assert (root / "01A" / "chunks" / "000001").read_bytes() == b"abc"
        # No temp files are left behind, and a stray one (an upload in flight) is invisible.
        assert sorted(p.name for p in (root / "01A" / "chunks").iterdir()) == ["000001"]
        (root / "01A" / "chunks" / (TMP_PREFIX + "zz")).write_bytes(b"partial")
        (root / "empty" / "nested").mkdir(parents=True)
        assert await b.iter(recursive=True) == ["01A/chunks/000001"]
        assert await b.iter("01A/chunks") == ["01A/chunks/000001"]
        assert await b.iter() == ["01A/"]  # empty directories are not listed
        with pytest.raises(InvalidObjectName):
            await b.upload("x/" + TMP_PREFIX + "a", b"")
        await b.delete("01A/chunks/000001")
        assert (root / "01A" / "chunks").is_dir()  # still holds the stray temp file
        os.unlink(root / "01A" / "chunks" / (TMP_PREFIX + "zz"))
        await b.upload("q/r", b"1")
        await b.delete("q/r")
        assert not (root / "q").exists()  # emptied directories are pruned
    run(go())


def test_fs_no_escape_through_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    root = tmp_path / "b"
    b = FilesystemBucket(root)
    os.symlink(outside, root / "link")

    async def go():
        with pytest.raises(InvalidObjectName):
            await b.get("link/secret")
        with pytest.raises(InvalidObjectName):
            await b.upload("link/new", b"x")
        assert not (outside / "new").exists()
        assert await b.iter() == []
        assert await b.iter("link") == []
    run(go())


def test_fs_upload_over_directory_fails_cleanly(tmp_path):
    b = FilesystemBucket(tmp_path / "b")

    async def go():
        await b.upload("d/x", b"1")
        with pytest.raises(BucketError):
            await b.upload("d", b"2")
        with pytest.raises(BucketError):
            await b.upload("d/x/y", b"3")  # parent is an object
        assert await b.iter(recursive=True) == ["d/x"]
    run(go())


# -- prefixed view ---------------------------------------------------------------------------------

def test_prefixed_bucket_maps_names(tmp_path):
    inner = FilesystemBucket(tmp_path / "b")
    p = PrefixedBucket(inner, "/team/a/")

    async def go():
        await p.upload("01A/meta.json", b"{}")
        await inner.upload("other", b"not ours")
        assert (tmp_path / "b" / "team" / "a" / "01A" / "meta.json").exists()
        assert await inner.iter() == ["other", "team/"]
        assert await p.iter() == ["01A/"]
        assert await p.iter("01A") == ["01A/meta.json"]
        with pytest.raises(ObjectNotFound) as ei:
            await p.get("other")
        assert ei.value.name == "other"
    run(go())
    assert with_prefix(inner, "") is inner
    assert with_prefix(inner, "//") is inner
    assert isinstance(with_prefix(inner, "x"), PrefixedBucket)
    with pytest.raises(ValueError):
        PrefixedBucket(inner, "a//b")


# -- S3 specifics --------------------------------------------------------------------------------

def _etag(b: S3Bucket, key: str) -> str:
    return b.client.head_object(Bucket=b.name, Key=key)["ETag"].strip('"')


def test_s3_multipart_upload(moto_server, tmp_path):
    b = new_s3_bucket(moto_server, part_size=5 * MIB)
    data = os.urandom(11 * MIB + 123)
    src = tmp_path / "big"
    src.write_bytes(data)
    parts: list[int] = []
    b.client.meta.events.register("provide-client-params.s3.UploadPart",
                                  lambda params, **_: parts.append(params["PartNumber"]))

    async def go():
        await b.upload("big/from-bytes", data)
        await b.upload("big/from-file", src)
        assert await b.get("big/from-bytes") == data
        assert await b.get("big/from-file") == data
        assert await b.get_range("big/from-file", 5 * MIB - 2, 4) == data[5 * MIB - 2:5 * MIB + 2]
        assert (await b.attributes("big/from-file")).size == len(data)
        await b.close()
    run(go())
    assert sorted(parts) == [1, 1, 2, 2, 3, 3]
    # S3's multipart ETag: md5 of the parts' md5s, "-<number of parts>".
    digests = b"".join(hashlib.md5(data[o:o + 5 * MIB]).digest() for o in range(0, len(data), 5 * MIB))
    assert _etag(b, "big/from-bytes") == f"{hashlib.md5(digests).hexdigest()}-3"


def test_s3_small_upload_is_single_put(moto_server):
    b = new_s3_bucket(moto_server, part_size=5 * MIB)
    data = os.urandom(5 * MIB)  # exactly part_size: one PUT
    run(b.upload("o", data))
    assert _etag(b, "o") == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_s3_listing_pagination(moto_server, version):
    b = new_s3_bucket(moto_server, list_objects_version=version)
    op = "ListObjects" if version == "v1" else "ListObjectsV2"
    pages: list[int] = []

    def small_pages(params, **_):
        params["MaxKeys"] = 2
        pages.append(1)
    b.client.meta.events.register(f"provide-client-params.s3.{op}", small_pages)
    names = [f"d/{i:02d}" for i in range(7)] + [f"d/sub{i}/x" for i in range(3)]

    async def go():
        await asyncio.gather(*(b.upload(n, b"1") for n in names))
        assert await b.iter("d", recursive=True) == sorted(names)
        recursive_pages = len(pages)
        assert await b.iter("d") == [f"d/{i:02d}" for i in range(7)] + ["d/sub0/", "d/sub1/", "d/sub2/"]
        return recursive_pages
    assert run(go()) == 5
    assert len(pages) >= 9  # non-recursive also paged (moto v1 pages keys only: 4 pages)


def _fake_response(status: int, code: str) -> botocore.awsrequest.AWSResponse:
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    class Raw:
        def stream(self, *_, **__):
            yield body
    return botocore.awsrequest.AWSResponse("http://injected", status, {"Content-Type": "application/xml"}, Raw())


def test_s3_retries_transient_errors(moto_server):
    b = new_s3_bucket(moto_server)
    run(b.upload("obj", b"payload"))
    sends: list[str] = []
    failures = {"GetObject": 2, "PutObject": 1, "ListObjectsV2": 1}

    def flaky(request, event_name, **_):
        op = event_name.rsplit(".", 1)[-1]
        sends.append(op)
        if failures.get(op, 0) > 0:
            failures[op] -= 1
            if op == "PutObject":
                raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)
            if op == "ListObjectsV2":
                return _fake_response(429, "SlowDown")
            return _fake_response(503, "ServiceUnavailable")
        return None
    b.client.meta.events.register("before-send.s3", flaky)

    async def go():
        assert await b.get("obj") == b"payload"
        await b.upload("obj2", b"second")
        assert await b.iter() == ["obj", "obj2"]
    run(go())
    assert sends.count("GetObject") == 3
    assert sends.count("PutObject") == 2
    assert sends.count("ListObjectsV2") == 2


def test_s3_does_not_retry_permanent_errors(moto_server):
    b = new_s3_bucket(moto_server, max_retries=5)
    sends: list[str] = []
    b.client.meta.events.register("before-send.s3", lambda event_name, **_: sends.append(event_name))

    async def go():
        assert not await b.exists("missing")
        with pytest.raises(ObjectNotFound):
            await b.get("missing")
        forbidden = lambda **_: _fake_response(403, "AccessDenied")  # noqa: E731
        b.client.meta.events.register("before-send.s3.GetObject", forbidden, unique_id="deny")
        with pytest.raises(BucketError) as ei:
            await b.get("whatever")
        assert not is_not_found(ei.value)
    run(go())
    assert len(sends) == 3  # one HEAD, one GET, one denied GET: nothing retried


def test_s3_gives_up_after_max_retries(moto_server):
    b = new_s3_bucket(moto_server, max_retries=2)
    sends: list[str] = []

    def always_503(**_):
        sends.append("x")
        return _fake_response(503, "ServiceUnavailable")
    b.client.meta.events.register("before-send.s3.GetObject", always_503)
    with pytest.raises(BucketError, match="ServiceUnavailable"):
        run(b.get("obj"))
    assert len(sends) == 3


def test_s3_connection_refused_is_retried_then_reported():
    port = free_port()  # nothing listens here
    conf = S3Config.from_dict({"bucket": "b", "endpoint": f"127.0.0.1:{port}", "insecure": True,
                               "access_key": "a", "secret_key": "s", "max_retries": 2})
    b = S3Bucket(conf, backoff_base=0.01, backoff_max=0.05)
    sends: list[str] = []
    b.client.meta.events.register("before-send.s3", lambda **_: sends.append("x"))
    with pytest.raises(BucketError) as ei:
        run(b.get("x"))
    assert isinstance(ei.value.__cause__, botocore.exceptions.EndpointConnectionError)
    assert len(sends) == 3


def test_s3_survives_server_restart():
    """The S3 server really goes away mid-operation and comes back: the request is retried."""
    server = MotoServer()
    try:
        server.start()
    except MotoNotInstalled as e:
        pytest.skip(f"moto_server is not installed: {e}")
    try:
        server.create_bucket("blocks")
        b = S3Bucket(S3Config.from_dict(s3_config(server, "blocks")), backoff_base=0.05, backoff_max=0.5)
        errors: list[str] = []

        def restart_once(exception=None, **_):
            if exception is not None and not errors:
                errors.append(type(exception).__name__)
                server.start()  # blocks until it answers (runs in the worker thread)
                server.create_bucket("blocks")  # moto's state did not survive
        b.client.meta.events.register("after-call-error.s3.PutObject", restart_once)

        server.stop()  # the next request meets a refused connection

        async def go():
            await b.upload("01A/meta.json", b"{}")
            assert await b.get("01A/meta.json") == b"{}"
            await b.close()
        run(go())
        assert errors == ["EndpointConnectionError"]
    finally:
        server.stop()


def test_s3_sse_s3_headers(moto_server):
    b = new_s3_bucket(moto_server, sse_config={"type": "SSE-S3"})
    seen: list[str] = []
    b.client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: seen.append(request.headers.get("x-amz-server-side-encryption", b"")))
    run(b.upload("enc", b"secret"))
    assert run(b.get("enc")) == b"secret"
    assert [s.decode() if isinstance(s, bytes) else s for s in seen] == ["AES256"]


def _header(request: Any, name: str) -> str:
    v = request.headers.get(name, "")
    return v.decode() if isinstance(v, bytes) else v


def test_s3_sse_c_key_sent_on_every_request(moto_server, tmp_path):
    key = os.urandom(32)
    (tmp_path / "key").write_bytes(key)
    b = new_s3_bucket(moto_server, part_size=5 * MIB,
                      sse_config={"type": "SSE-C", "encryption_key": str(tmp_path / "key")})
    sent: list[tuple[str, str, str]] = []
    b.client.meta.events.register("before-send.s3", lambda request, event_name, **_: sent.append((
        event_name.rsplit(".", 1)[-1],
        _header(request, "x-amz-server-side-encryption-customer-algorithm"),
        _header(request, "x-amz-server-side-encryption-customer-key-MD5"))))
    data = os.urandom(6 * MIB)
    run(b.upload("big", data))
    assert run(b.get_range("big", 1, 3)) == data[1:4]
    assert run(b.exists("big"))
    md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    ops = {op for op, _, _ in sent}
    assert {"CreateMultipartUpload", "UploadPart", "GetObject", "HeadObject"} <= ops
    for op, alg, key_md5 in sent:
        if op != "CompleteMultipartUpload":
            assert (alg, key_md5) == ("AES256", md5), op
    with pytest.raises(ConfigError, match="32 bytes"):
        (tmp_path / "short").write_bytes(b"x" * 16)
        S3Bucket(S3Config.from_dict(s3_config(moto_server, "bkt", sse_config={
            "type": "SSE-C", "encryption_key": str(tmp_path / "short")})))


def test_s3_failed_multipart_is_aborted(moto_server):
    b = new_s3_bucket(moto_server, part_size=5 * MIB)
    b.client.meta.events.register(
        "before-send.s3.UploadPart",
        lambda request, **_: _fake_response(400, "InvalidArgument") if "partNumber=2" in request.url else None)
    with pytest.raises(BucketError, match="InvalidArgument"):
        run(b.upload("big", os.urandom(11 * MIB)))
    assert b.client.list_multipart_uploads(Bucket=b.name).get("Uploads", []) == []
    assert not run(b.exists("big"))


def test_s3_sse_kms_args():
    conf = S3Config.from_dict({"bucket": "b", "endpoint": "h:1", "sse_config": {
        "type": "SSE-KMS", "kms_key_id": "k1", "kms_encryption_context": {"team": "obs"}}})
    b = S3Bucket(conf)
    w = b._write_args
    assert w["ServerSideEncryption"] == "aws:kms" and w["SSEKMSKeyId"] == "k1"
    assert base64.b64decode(w["SSEKMSEncryptionContext"]) == b'{"team":"obs"}'
    run(b.close())


# -- YAML config -------------------------------------------------------------------------------------

def test_yaml_filesystem_with_prefix(tmp_path):
    b = bucket_from_config(f"type: filesystem\nconfig:\n  directory: {tmp_path / 'd'}\nprefix: /cluster-1/\n")
    assert isinstance(b, PrefixedBucket) and b.prefix == "cluster-1"
    assert isinstance(b.inner, FilesystemBucket)
    run(b.upload("01A/meta.json", b"{}"))
    assert (tmp_path / "d" / "cluster-1" / "01A" / "meta.json").read_bytes() == b"{}"

    plain = bucket_from_config({"type": "FILESYSTEM", "config": {"directory": str(tmp_path / "e")}})
    assert isinstance(plain, FilesystemBucket)
    assert isinstance(bucket_from_config({"type": "FILESYSTEM", "prefix": "",
                                          "config": {"directory": str(tmp_path / "e")}}),
                      FilesystemBucket)


def test_yaml_s3_full(moto_server):
    moto_server.create_bucket("yaml-bkt")
    text = f"""
type: S3
config:
  bucket: yaml-bkt
  endpoint: {moto_server.endpoint}
  region: eu-west-1
  access_key: AK
  secret_key: SK
  session_token: ""
  insecure: true
  signature_version2: false
  part_size: 10485760
  max_retries: 3
  put_user_metadata:
    X-Amz-Storage-Class: STANDARD
    owner: promring
  http_config:
    idle_conn_timeout: 1m30s
    response_header_timeout: 2m
    insecure_skip_verify: false
    tls_config:
      insecure_skip_verify: false
  sse_config:
    type: ""
  trace:
    enable: false
prefix: tenant-7
"""
    b = bucket_from_config(text)
    assert isinstance(b, PrefixedBucket)
    s3 = b.inner
    assert isinstance(s3, S3Bucket)
    c = s3.config
    assert (c.bucket, c.region, c.part_size, c.max_retries) == ("yaml-bkt", "eu-west-1", 10 * MIB, 3)
    assert c.http_config.idle_conn_timeout == 90.0 and c.http_config.response_header_timeout == 120.0
    assert s3._write_args == {"Metadata": {"owner": "promring"}, "StorageClass": "STANDARD"}

    async def go():
        await b.upload("01A/meta.json", b"{}")
        assert await s3.iter(recursive=True) == ["tenant-7/01A/meta.json"]
        assert await b.iter() == ["01A/"]
        await b.close()
    run(go())
    head = s3.client.head_object(Bucket="yaml-bkt", Key="tenant-7/01A/meta.json")
    assert head["Metadata"] == {"owner": "promring"}


def test_yaml_s3_signature_v2(moto_server):
    moto_server.create_bucket("v2-bkt")
    b = bucket_from_config({"type": "S3", "config": s3_config(moto_server, "v2-bkt", signature_version2=True)})
    auth: list[str] = []
    b.client.meta.events.register("before-send.s3", lambda request, **_: auth.append(
        request.headers["Authorization"].decode() if isinstance(request.headers["Authorization"], bytes)
        else request.headers["Authorization"]))
    run(b.upload("x", b"1"))
    assert run(b.get("x")) == b"1"
    assert auth and all(a.startswith("AWS AK:") or a.startswith("AWS test:") for a in auth)


@pytest.mark.parametrize("conf, message", [
    ("type: FOO\nconfig: {}", "bucket with type FOO is not supported"),
    ("type: GCS\nconfig: {bucket: x}", "not supported by promring"),
    ("config: {directory: /tmp/x}", "missing 'type'"),
    ("type: FILESYSTEM\nconfig: {directory: /tmp/x}\nextra: 1", "unknown field(s) extra"),
    ("type: FILESYSTEM\nconfig: {dir: /tmp/x}", "unknown field(s) dir"),
    ("type: FILESYSTEM\nconfig: {}", "missing directory"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', acess_key: a}", "unknown field(s) acess_key"),
    ("type: S3\nconfig: {bucket: b}", "no s3 endpoint"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'http://h:1'}", "without scheme"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', insecure: 'yes'}", "S3 config.insecure: expected true or false"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', access_key: a}", "no s3 secret_key"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', part_size: 1024}", "part_size 1024"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', sse_config: {type: SSE-KMS}}", "kms_key_id"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', sse_config: {type: SSE-X}}", "unsupported sse_config.type"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', http_config: {idle_conn_timeout: 5 min}}",
     "S3 config.http_config.idle_conn_timeout: not a valid duration"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', http_config: {tls_config: {bogus: 1}}}",
     "S3 config.http_config.tls_config: unknown field(s) bogus"),
    ("type: S3\nconfig: {bucket: b, endpoint: 'h:1', list_objects_version: v3}", "list_objects_version"),
    ("type: FILESYSTEM\nconfig: {directory: /tmp/x}\nprefix: a/../b", "invalid prefix"),
    ("- not a mapping", "must be a mapping"),
    ("type: [", "parsing objstore config YAML"),
])
def test_yaml_errors(conf, message):
    with pytest.raises(ConfigError) as ei:
        bucket_from_config(conf)
    assert message in str(ei.value)


def test_parse_duration():
    assert parse_duration("90s") == 90
    assert parse_duration("1m30s") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("500ms") == 0.5
    assert parse_duration("0") == 0
    assert parse_duration(15) == 15
    for bad in ("", "1.5s", "s", "10 s", "3x", True):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_path_or_content_flags_substitute_environment_variables_as_thanos(tmp_path, monkeypatch):
    """Thanos's WithEnvSubstitution on --objstore.config(-file) and the other YAML flags:
    ``$(NAME)`` becomes the variable's value (a secret kept out of the file); an unset one
    stops the start with a message naming it."""
    import argparse

    from objstore.flags import add_objstore_flags, add_path_or_content, objstore_yaml
    from objstore.flags import path_or_content

    p = argparse.ArgumentParser()
    add_objstore_flags(p, required=True)
    add_path_or_content(p, "selector.relabel-config", "rules")
    monkeypatch.setenv("PROMRING_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("PROMRING_TEST_UNSET", raising=False)
    (tmp_path / "b.yml").write_text("type: FILESYSTEM\nconfig:\n  directory: $(PROMRING_TEST_DIR)\n")
    a = p.parse_args([f"--objstore.config-file={tmp_path / 'b.yml'}",
                      "--selector.relabel-config", "- {regex: '$(PROMRING_TEST_DIR)x', a: $b}"])
    assert objstore_yaml(a) == f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path}\n"
    assert path_or_content(a, "selector.relabel-config") == f"- {{regex: '{tmp_path}x', a: $b}}"
    a = p.parse_args(["--objstore.config", "config: {secret_key: $(PROMRING_TEST_UNSET)}",
                      "--selector.relabel-config", "$(PROMRING_TEST_UNSET)"])
    with pytest.raises(SystemExit, match='unset environment variable "PROMRING_TEST_UNSET"'):
        objstore_yaml(a)
    with pytest.raises(ValueError, match="--selector.relabel-config: found reference"):
        path_or_content(a, "selector.relabel-config")
