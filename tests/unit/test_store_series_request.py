"""The store's Series request decoded in C (storeapi._wire.series_request, wrapped by
storeapi.seriesrequest): on generated requests the plain object reads as upb's message does for
everything StoreServer.series reads, or the decoder declines (None) and upb decodes; it never
takes bytes upb rejects; our querier's and Thanos's usual requests take it; and a real store
answers the same bytes through it as through upb."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import storeapi.seriesrequest as seriesrequest  # noqa: E402
from objstore import FilesystemBucket  # noqa: E402
from receiver.tsdb.labels import Matcher, MatchType  # noqa: E402
from storeapi import hints_pb2, rpc_pb2, types_pb2  # noqa: E402
from storeapi._wire import series_request as decode  # noqa: E402
from storeapi.client import StoreClient  # noqa: E402
from storeapi.seriesrequest import PlainSeriesRequest, series_request  # noqa: E402
from storeapi.server import StoreServer, _matcher_key  # noqa: E402
from test_store_gateway import H2, T0, make_series, upload_dir, with_gateway, write  # noqa: E402
from test_storeapi import SERIES, FakeSource  # noqa: E402

_SETTINGS = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _read(r: PlainSeriesRequest | rpc_pb2.SeriesRequest) -> tuple:
    """Everything StoreServer.series (and what it calls) reads of a request, with types."""
    got = (_matcher_key(r.matchers), r.min_time, r.max_time, r.skip_chunks,
           tuple(r.without_replica_labels), r.response_batch_size, r.limit,
           r.max_resolution_window, tuple(r.aggregates), r.partial_response_strategy,
           r.partial_response_disabled, r.step, r.range, r.HasField("shard_info"),
           r.HasField("hints"), r.HasField("query_hints"))
    return got, tuple(type(v).__name__ for v in got[1:]), \
        tuple(tuple(map(type, m)) for m in got[0])


def _upb(raw: bytes) -> rpc_pb2.SeriesRequest | None:
    try:
        return rpc_pb2.SeriesRequest.FromString(raw)
    except DecodeError:
        return None


def _agrees(raw: bytes) -> tuple | None:
    """The decoder's result, checked against upb: declined or equal, never taking bytes upb
    rejects, never failing but with ValueError; and the route's deserializer fails exactly
    when upb does."""
    try:
        got = decode(raw)
    except ValueError:
        got = None
    want = _upb(raw)
    if want is None:
        assert got is None, raw
        with pytest.raises(DecodeError):
            series_request(raw)
        return None
    if got is not None:
        assert _read(PlainSeriesRequest(*got)) == _read(want), raw
    assert _read(series_request(raw)) == _read(want)
    return got


# --- protobuf encoding by hand (any order, repeats, packed or not, hostile values) ------------

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _vfield(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _lfield(num: int, body: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(body)) + body


INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
TEXT = st.text(max_size=10)  # unicode, no surrogates
_SCALARS = [1, 2, 4, 10, 11, 15, 16]  # the int64 fields


@st.composite
def _matcher(draw, types=st.integers(0, 3)) -> bytes:
    """A LabelMatcher field; its own fields repeated and in any order (the last one wins)."""
    parts = draw(st.lists(st.one_of(
        st.builds(_vfield, st.just(1), types),
        st.builds(lambda n, s: _lfield(n, s.encode()), st.sampled_from([2, 3]), TEXT)),
        max_size=5))
    return _lfield(3, b"".join(parts))


@st.composite
def _aggregates(draw, values=st.integers(0, 5)) -> bytes:
    vals = draw(st.lists(values, max_size=4))
    if draw(st.booleans()):
        return _lfield(5, b"".join(map(_varint, vals)))  # packed
    return b"".join(_vfield(5, v) for v in vals)


_QUERY_HINTS = st.builds(
    lambda step, fn, by, labels, rng, proj, inc, name: rpc_pb2.QueryHints(
        step_millis=step, func=rpc_pb2.Func(name=fn) if fn is not None else None,
        grouping=rpc_pb2.Grouping(by=by, labels=labels) if labels is not None else None,
        range=rpc_pb2.Range(millis=rng) if rng is not None else None,
        projection_labels=proj, projection_include=inc,
        series_hash_label_name=name).SerializeToString(),
    INT64, st.none() | TEXT, st.booleans(), st.none() | st.lists(TEXT, max_size=2),
    st.none() | INT64, st.lists(TEXT, max_size=2), st.booleans(), TEXT)

USUAL_FIELD = st.one_of(
    st.builds(_vfield, st.sampled_from(_SCALARS), INT64),
    st.builds(_vfield, st.sampled_from([6, 7, 8]), st.integers(0, 1)),  # bools, strategy
    _matcher(), _matcher(), _aggregates(),
    st.builds(lambda s: _lfield(14, s.encode()), TEXT),
    st.builds(lambda b: _lfield(12, b), _QUERY_HINTS),
)

_ANY = st.builds(lambda url, value: any_pb2.Any(type_url=url, value=value).SerializeToString(),
                 TEXT, st.binary(max_size=8))
_SHARD = st.builds(lambda i, n, by, labels: rpc_pb2.ShardInfo(
    shard_index=i, total_shards=n, by=by, labels=labels).SerializeToString(),
    INT64, INT64, st.booleans(), st.lists(TEXT, max_size=2))
_FIELD_NUMBERS = st.integers(1, 40)

EXOTIC_FIELD = st.one_of(
    st.builds(lambda b: _lfield(9, b), _ANY),                          # hints
    st.builds(lambda b: _lfield(13, b), _SHARD),                       # shard_info
    st.builds(_vfield, st.integers(17, 5000), INT64),                  # unknown fields
    st.builds(_lfield, st.integers(17, 5000), st.binary(max_size=6)),
    st.builds(_lfield, _FIELD_NUMBERS, st.binary(max_size=6)),         # any wire type 2
    st.builds(_vfield, _FIELD_NUMBERS, INT64),                         # any wire type 0
    st.builds(lambda n, b: _varint(n << 3 | 1) + b, _FIELD_NUMBERS, st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: _varint(n << 3 | 5) + b, _FIELD_NUMBERS, st.binary(min_size=4, max_size=4)),
    st.builds(lambda n: _varint(n << 3 | 3) + _varint(n << 3 | 4), _FIELD_NUMBERS),  # a group
    st.builds(_vfield, st.sampled_from([6, 7, 8]), st.integers(2, (1 << 64) - 1)),
    _matcher(types=st.integers(-(1 << 63), (1 << 64) - 1)),             # enum beyond its names
    _aggregates(values=st.integers(-(1 << 63), (1 << 64) - 1)),
    st.builds(lambda b: _lfield(12, b), st.binary(max_size=8)),        # query_hints of garbage
    st.builds(lambda n, b: _lfield(n, b), st.sampled_from([12, 14]),   # strings not UTF-8
              st.sampled_from([b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xc0\x80"])),
)


@_SETTINGS
@given(st.lists(USUAL_FIELD, max_size=14))
def test_the_usual_request_is_decoded_in_c_as_upb_reads_it(fields: list[bytes]) -> None:
    raw = b"".join(fields)
    assert _upb(raw) is not None
    assert _agrees(raw) is not None, raw


@_SETTINGS
@given(st.lists(st.one_of(USUAL_FIELD, EXOTIC_FIELD), max_size=10))
def test_any_other_request_is_declined_or_read_as_upb_reads_it(fields: list[bytes]) -> None:
    _agrees(b"".join(fields))


@_SETTINGS
@given(st.lists(USUAL_FIELD, min_size=1, max_size=8), st.data())
def test_hostile_bytes_are_declined_or_read_as_upb_reads_them(fields: list[bytes], data) -> None:
    """Truncated, cut into, overwritten and extended requests; random bytes."""
    raw = b"".join(fields)
    at = data.draw(st.integers(0, len(raw)))
    _agrees(raw[:at])
    _agrees(raw[:at] + data.draw(st.binary(min_size=1, max_size=12)) + raw[at:])
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        _agrees(raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1:])
    _agrees(data.draw(st.binary(max_size=40)))


HOSTILE = {
    "varint of 11 bytes": b"\x08" + b"\xff" * 10 + b"\x01",
    "varint past 64 bits": b"\x08" + b"\xff" * 9 + b"\x7f",
    "truncated varint": b"\x08\xff",
    "truncated tag": b"\x80",
    "huge length": b"\x1a\xff\xff\xff\xff\x0f",
    "length past the end": b"\x1a\x05\x12\x01a",
    "field 0": b"\x00\x01",
    "tag past 32 bits": _varint(1 << 35) + b"\x01",
    "name not UTF-8": _lfield(3, _lfield(2, b"\xff")),
    "overwritten value not UTF-8": _lfield(3, _lfield(3, b"\xc3") + _lfield(3, b"ok")),
    "surrogate in a replica label": _lfield(14, b"\xed\xa0\x80"),
    "query hints string not UTF-8": _lfield(12, _lfield(8, b"\xff")),
    "query hints func not UTF-8": _lfield(12, _lfield(2, _lfield(1, b"\xfe"))),
    "packed aggregates cut": _lfield(5, b"\x01\x80"),
    "a negative matcher type": _lfield(3, _vfield(1, -1)),
    "an end of group alone": b"\x0c",
    "matchers then garbage": _lfield(3, _lfield(2, b"a")) + b"\xff\xff",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_cases_are_declined_or_read_as_upb_reads_them(case: str) -> None:
    assert _agrees(HOSTILE[case]) is None


def test_what_our_querier_and_thanos_send_takes_the_c_path() -> None:
    client = StoreClient("127.0.0.1:1", series_batch_size=256)
    ms = [Matcher(MatchType.EQ, "__name__", "up"), Matcher(MatchType.RE, "job", "a.*|ü"),
          Matcher(MatchType.NEQ, "env", ""), Matcher(MatchType.NRE, "instance", "x.+")]
    for kw in ({}, {"skip_chunks": True}, {"without_replica_labels": ("replica", "rule_replica")},
               {"limit": 7, "partial_response": True}):
        args = dict(skip_chunks=False, without_replica_labels=(), limit=0,
                    partial_response=False) | kw
        raw = client._series_request(-5, T0, ms, **args)  # noqa: SLF001 -- its bytes, sent
        assert isinstance(raw, bytes) and _agrees(raw) is not None, kw
    # StoreClient.series_aggr's request (downsampled reads)
    aggr = rpc_pb2.SeriesRequest(
        min_time=1, max_time=2, matchers=[types_pb2.LabelMatcher(name="a", value="b")],
        max_resolution_window=300_000, aggregates=[rpc_pb2.COUNT, rpc_pb2.SUM],
        response_batch_size=256, partial_response_disabled=True,
        partial_response_strategy=types_pb2.ABORT)
    assert _agrees(aggr.SerializeToString()) is not None
    assert _agrees(_thanos_request().SerializeToString()) is not None


def _thanos_request() -> rpc_pb2.SeriesRequest:
    """A request as Thanos's querier sends it through its proxy (pkg/query/querier.go: limit,
    aggregates, the strategy, a batch size, query hints always, replica labels with dedup)."""
    return rpc_pb2.SeriesRequest(
        min_time=T0, max_time=T0 + H2, limit=0,
        matchers=[types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="__name__",
                                         value="metric_[12]"),
                  types_pb2.LabelMatcher(name="job", value="job1")],
        max_resolution_window=0, aggregates=[rpc_pb2.COUNT, rpc_pb2.SUM],
        partial_response_strategy=types_pb2.ABORT, response_batch_size=64,
        query_hints=rpc_pb2.QueryHints(projection_labels=["job"], projection_include=True,
                                       series_hash_label_name="__cf_series_hash__"),
        without_replica_labels=["replica"])


def test_the_plain_request_answers_has_field_as_upb() -> None:
    raw = _thanos_request().SerializeToString()
    plain, upb = series_request(raw), rpc_pb2.SeriesRequest.FromString(raw)
    assert type(plain) is PlainSeriesRequest
    assert plain == PlainSeriesRequest(*decode(raw))  # (made from the fields in C)
    for name in ("hints", "shard_info", "query_hints"):
        assert plain.HasField(name) == upb.HasField(name)
    for name in ("min_time", "matchers"):
        with pytest.raises(ValueError):
            upb.HasField(name)
        with pytest.raises(ValueError):
            plain.HasField(name)


# --- end to end: the same answer bytes through the C path and through upb -------------------

def _e2e_requests() -> dict[str, bytes]:
    client = StoreClient("127.0.0.1:1", series_batch_size=3)
    some = [Matcher(MatchType.RE, "__name__", "metric_[0-2]")]

    def ours(**kw) -> bytes:
        args = dict(skip_chunks=False, without_replica_labels=(), limit=0,
                    partial_response=False) | kw
        return client._series_request(T0 - 1, T0 + H2 // 2, some, **args)  # noqa: SLF001

    hints = any_pb2.Any()
    hints.Pack(hints_pb2.SeriesRequestHints(), type_url_prefix="type.googleapis.com/")
    return {
        "ours": ours(),
        "ours, skip chunks": ours(skip_chunks=True),
        "ours, replica label stripped": ours(without_replica_labels=("replica",)),
        "ours, limit": ours(limit=2),
        "thanos": _thanos_request().SerializeToString(),
        "one per frame": rpc_pb2.SeriesRequest(
            min_time=T0, max_time=T0 + H2, matchers=[types_pb2.LabelMatcher(
                type=types_pb2.LabelMatcher.NEQ, name="job", value="job0")]).SerializeToString(),
        "hints (upb's)": rpc_pb2.SeriesRequest(
            min_time=T0, max_time=T0 + H2, hints=hints, response_batch_size=8,
            matchers=[types_pb2.LabelMatcher(name="job", value="job2")]).SerializeToString(),
        "sharded (upb's)": rpc_pb2.SeriesRequest(
            min_time=T0, max_time=T0 + H2, response_batch_size=8,
            shard_info=rpc_pb2.ShardInfo(shard_index=1, total_shards=2, by=True, labels=["instance"]),
            matchers=[types_pb2.LabelMatcher(name="job", value="job2")]).SerializeToString(),
        "no matchers": _vfield(1, T0),
        "bad regex": _lfield(3, _vfield(1, 2) + _lfield(2, b"job") + _lfield(3, b"(")),
        "unknown matcher type": _lfield(3, _vfield(1, 9) + _lfield(2, b"job")),
        "not protobuf": b"\x1a\xff\xff\xff\xff\x0f",
        "not UTF-8": _lfield(3, _lfield(2, b"job") + _lfield(3, b"\xff")),
    }


_USUAL = {"ours", "ours, skip chunks", "ours, replica label stripped", "ours, limit", "thanos",
          "one per frame", "no matchers", "bad regex"}


async def _answer(call) -> tuple:
    """A Series call's messages as received and its status."""
    frames = []
    try:
        async for f in call:
            frames.append(bytes(f))
    except (grpc.RpcError, Exception) as e:  # noqa: BLE001 -- the status is the subject
        return frames, e.code(), e.details()
    return frames, grpc.StatusCode.OK, ""


def _spied(monkeypatch: pytest.MonkeyPatch, taken: list[bool]) -> None:
    def spy(raw):
        got = decode(raw)
        taken.append(got is not None)
        return got
    monkeypatch.setattr(seriesrequest, "_decode", spy)


def test_a_real_store_answers_the_same_bytes_through_c_and_upb(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series = make_series(24, T0, H2)
    bdir = write(tmp_path, series, T0, T0 + H2, ext={"replica": "r1", "cluster": "c"})
    bucket = FilesystemBucket(tmp_path / "bucket")
    asyncio.run(upload_dir(bucket, bdir))
    requests = _e2e_requests()

    def answers(sub: str) -> dict[str, tuple]:
        out: dict[str, tuple] = {}

        async def body(gw, client: StoreClient) -> None:
            for name, raw in requests.items():
                out[name] = await _answer(client._rpc().series_raw(  # noqa: SLF001
                    raw, timeout=30, metadata=b""))
        asyncio.run(with_gateway(tmp_path / sub, bucket, body))
        return out

    taken: list[bool] = []
    _spied(monkeypatch, taken)
    fast = answers("c")
    assert [n for n, t in zip(requests, taken) if t] == [n for n in requests if n in _USUAL]
    monkeypatch.setattr(seriesrequest, "_decode", lambda raw: None)
    assert answers("upb") == fast
    assert fast["ours"][0] and fast["thanos"][0] and fast["ours, limit"][0]
    assert fast["no matchers"][1] == fast["bad regex"][1] == grpc.StatusCode.INVALID_ARGUMENT
    for name in ("not protobuf", "not UTF-8"):
        assert fast[name] == ([], grpc.StatusCode.INTERNAL, "Exception deserializing request!")


def test_grpcio_server_serves_either_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """StoreServer's handlers on grpc.aio: the same answers through the C path and upb."""
    requests = _e2e_requests()
    requests["ours"] = StoreClient("127.0.0.1:1")._series_request(  # noqa: SLF001
        0, 10_000, [Matcher(MatchType.EQ, "__name__", "up")], False, (), 0, False)

    async def answers() -> dict[str, tuple]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(StoreServer(FakeSource(SERIES)).handlers())
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_stream("/thanos.Store/Series")
        try:
            return {name: await _answer(call(raw)) for name, raw in requests.items()}
        finally:
            await channel.close()
            await server.stop(None)

    taken: list[bool] = []
    _spied(monkeypatch, taken)
    fast = asyncio.run(answers())
    assert any(taken) and fast["ours"][0]
    monkeypatch.setattr(seriesrequest, "_decode", lambda raw: None)
    assert asyncio.run(answers()) == fast
