"""StoreAPI: Thanos wire compatibility (field numbers, method paths) and a real grpc.aio
server/client round trip over an in-memory series source."""
from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2

from receiver.tsdb.labels import Labels, Matcher, MatchType, matches_all
from storeapi import (
    hints_pb2, info_pb2, info_pb2_grpc, labels_pb2, prompb_pb2, remote_pb2, rpc_pb2,
    rpc_pb2_grpc, types_pb2,
)
from storeapi.client import RawSeries, StoreClient
from storeapi.server import GRPC_OPTIONS, StoreServer, serve
from storeapi.wire import SeriesEncoder
from receiver.tsdb.histogram import EncodedChunk

MIN_INT64, MAX_INT64 = -(1 << 63), (1 << 63) - 1
EXT_A = (("replica", "r1"), ("tenant_id", "a"))
EXT_B = (("replica", "r1"), ("tenant_id", "b"))


def lbls(**kw: str) -> Labels:
    return tuple(sorted(kw.items()))


class FakeSource:
    """In-memory SeriesSource. It applies matchers but deliberately returns every chunk, so the
    server's own time filtering is what the tests see; it records the arguments it was given."""

    def __init__(self, series: list[tuple[Labels, list[tuple[int, int, bytes]]]],
                 label_sets: list[Labels] = (EXT_A, EXT_B),
                 trange: tuple[int, int] = (1000, 9000)) -> None:
        self._series = sorted(series)
        self._sets = list(label_sets)
        self._range = trange
        self.calls: list[tuple] = []
        self.fail_after: int | None = None  # raise after yielding this many series

    def label_sets(self) -> list[Labels]:
        return self._sets

    def time_range(self) -> tuple[int, int]:
        return self._range

    def series(self, mint, maxt, matchers, skip_chunks):
        self.calls.append(("series", mint, maxt, list(matchers), skip_chunks))
        for i, s in enumerate(self._series):
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError("disk on fire")
            if matches_all(s[0], matchers):
                yield s

    def label_names(self, mint, maxt, matchers):
        self.calls.append(("label_names", mint, maxt, list(matchers)))
        return sorted({n for ls, _ in self._series if matches_all(ls, matchers) for n, _ in ls})

    def label_values(self, name, mint, maxt, matchers):
        self.calls.append(("label_values", name, mint, maxt, list(matchers)))
        return sorted({v for ls, _ in self._series if matches_all(ls, matchers)
                       for n, v in ls if n == name})


def chunk(mint: int, maxt: int) -> tuple[int, int, bytes]:
    return (mint, maxt, f"xor{mint}-{maxt}".encode())


SERIES = [
    (lbls(__name__="up", job="api", instance="a:1", replica="r1", tenant_id="a"),
     [chunk(1000, 1999), chunk(2000, 2999), chunk(3000, 3999)]),
    (lbls(__name__="up", job="api", instance="b:1", replica="r1", tenant_id="a"),
     [chunk(1000, 1999)]),
    (lbls(__name__="up", job="db", instance="c:1", replica="r1", tenant_id="b"),
     [chunk(5000, 5999), chunk(6000, 9000)]),
    (lbls(__name__="http_requests_total", job="api", instance="a:1", code="200", replica="r1",
          tenant_id="a"), [chunk(1000, 4000)]),
]


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


async def with_store(source, body, address: str = "127.0.0.1:0", **kw) -> None:
    """Serve ``source``, run ``body(client, channel)``, and always stop everything."""
    server, port = await serve(source, address, **kw)
    client = StoreClient(f"127.0.0.1:{port}", timeout_s=30)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS)
    try:
        await body(client, channel)
    finally:
        await client.close()
        await channel.close()
        await server.stop(None)


# --- wire compatibility ---------------------------------------------------------------------

def test_series_request_field_numbers_golden_bytes():
    req = rpc_pb2.SeriesRequest(
        min_time=1000, max_time=2000,
        matchers=[types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value="a.*")],
        partial_response_strategy=types_pb2.ABORT, skip_chunks=True,
        without_replica_labels=["replica"], limit=5, response_batch_size=64)
    golden = bytes.fromhex(
        "08e807"                      # 1 min_time varint 1000
        "10d00f"                      # 2 max_time varint 2000
        "1a0c" "0802" "12036a6f62" "1a03612e2a"  # 3 matchers {type=RE(2), name, value}
        "3801"                        # 7 partial_response_strategy ABORT
        "4001"                        # 8 skip_chunks
        "72077265706c696361"          # 14 without_replica_labels "replica"
        "7805"                        # 15 limit
        "800140"                      # 16 response_batch_size 64 (two-byte tag)
    )
    assert req.SerializeToString() == golden
    assert rpc_pb2.SeriesRequest.FromString(golden) == req
    # The remaining fields keep Thanos's numbers too.
    f = rpc_pb2.SeriesRequest.DESCRIPTOR.fields_by_name
    assert {n: f[n].number for n in (
        "max_resolution_window", "aggregates", "partial_response_disabled", "hints", "step",
        "range", "query_hints", "shard_info")} == {
        "max_resolution_window": 4, "aggregates": 5, "partial_response_disabled": 6, "hints": 9,
        "step": 10, "range": 11, "query_hints": 12, "shard_info": 13}


def test_series_response_golden_bytes_and_encoder():
    golden = bytes.fromhex(
        "0a14"                        # SeriesResponse.series (1), 20 bytes
        "0a06" "0a0161" "120162"      # Series.labels (1): Label{name=a, value=b}
        "120a" "0801" "1002"          # Series.chunks (2): AggrChunk{min_time=1, max_time=2,
        "1a04" "12020102"             #   raw (3) = Chunk{type XOR omitted, data (2) = 01 02}}
    )
    msg = rpc_pb2.SeriesResponse(series=types_pb2.Series(
        labels=[labels_pb2.Label(name="a", value="b")],
        chunks=[types_pb2.AggrChunk(min_time=1, max_time=2, raw=types_pb2.Chunk(
            type=types_pb2.Chunk.XOR, data=b"\x01\x02"))]))
    assert msg.SerializeToString() == golden
    enc = SeriesEncoder()
    assert enc.series_response(enc.series((("a", "b"),), [(1, 2, b"\x01\x02")])) == golden
    # Other oneof members: warning = 2, batch = 4 holding SeriesBatch.series = 1.
    assert enc.warning_response("w") == bytes.fromhex("120177")
    batch = enc.batch_response([enc.series((("a", "b"),), [])])
    assert batch == bytes.fromhex("220a" "0a08" "0a06" "0a0161120162")
    assert rpc_pb2.SeriesResponse.FromString(batch).batch.series[0].labels[0].value == "b"


def test_encoder_matches_upb_serialization():
    rnd = random.Random(7)
    enc = SeriesEncoder()
    names = ["__name__", "job", "instance", "ünïcode", "le", "x" * 200]
    for _ in range(300):
        ls = tuple(sorted({n: rnd.choice(["", "v", "é" * rnd.randint(1, 90), "0.5"])
                           for n in rnd.sample(names, rnd.randint(0, len(names)))}.items()))
        chunks = [(rnd.choice([0, -1, MIN_INT64, MAX_INT64, rnd.randint(-(1 << 40), 1 << 40)]),
                   rnd.choice([0, 1, MAX_INT64, rnd.randint(0, 1 << 50)]),
                   rnd.randbytes(rnd.choice([0, 1, 127, 128, 300, 20000])))
                  for _ in range(rnd.randint(0, 4))]
        pb = types_pb2.Series(
            labels=[labels_pb2.Label(name=n, value=v) for n, v in ls],
            chunks=[types_pb2.AggrChunk(min_time=a, max_time=b, raw=types_pb2.Chunk(data=d))
                    for a, b, d in chunks])
        body = enc.series(ls, chunks)
        assert enc.series_response(body) == rpc_pb2.SeriesResponse(series=pb).SerializeToString()
        assert enc.batch_response([body, body]) == rpc_pb2.SeriesResponse(
            batch=types_pb2.SeriesBatch(series=[pb, pb])).SerializeToString()
        # The server batches series already framed one by one: the same bytes.
        framed = enc.many([(ls, chunks)], MIN_INT64, MAX_INT64, True)[0] if chunks else \
            enc.series_response(body)
        assert enc.batch_of_frames([framed, framed]) == enc.batch_response([body, body])


def test_many_series_in_one_c_call_match_the_per_series_encoder():
    """series_frames (the server's batch path) gives the per-series encoder's bytes, trims
    chunks to the range as the server does, drops a series left without chunks (False) and
    hands anything not plain XOR back (None) -- shared label cache included."""
    rnd = random.Random(11)
    enc, ref = SeriesEncoder(), SeriesEncoder()
    names = ["__name__", "job", "instance", "ünïcode", "le"]
    items = []
    for _ in range(400):
        ls = tuple(sorted({n: rnd.choice(["", "v", "é" * rnd.randint(1, 90), "0.5"])
                           for n in rnd.sample(names, rnd.randint(0, len(names)))}.items()))
        start = rnd.randint(-50, 200)
        chunks = [(start + 40 * k, start + 40 * k + 30, rnd.randbytes(rnd.choice([0, 1, 300])))
                  for k in range(rnd.randint(0, 4))]
        items.append((ls, chunks))
    hist = EncodedChunk(b"\x01", 2)
    items += [((("a", "b"),), [(1, 2, hist)]), ((("a", "b"),), [(1, 2, bytearray(b"x"))]),
              ([("a", "b")], [(1, 2, b"x")]), ((("a", "\ud800"),), [(1, 2, b"x")])]
    mint, maxt = 0, 100
    for framed in (False, True):
        got = enc.many(items, mint, maxt, framed)
        assert len(got) == len(items)
        for (ls, chunks), g in zip(items[:400], got):
            kept = chunks
            if chunks and (chunks[0][1] < mint or chunks[-1][0] > maxt):
                kept = [c for c in chunks if c[1] >= mint and c[0] <= maxt]
                if not kept:
                    assert g is False
                    continue
            body = ref.series(ls, kept)
            assert g == (ref.series_response(body) if framed else body)
        assert got[400:] == [None] * 4
    assert any(g is False for g in got) and sum(isinstance(g, bytes) for g in got) > 200


def test_info_and_write_request_golden_bytes():
    info = info_pb2.InfoResponse(
        label_sets=[labels_pb2.ZLabelSet(labels=[labels_pb2.Label(name="a", value="b")])],
        ComponentType="receive",
        store=info_pb2.StoreInfo(min_time=1, max_time=2, supports_without_replica_labels=True))
    assert info.SerializeToString() == bytes.fromhex(
        "0a08" "0a06" "0a0161120162"  # 1 label_sets: ZLabelSet{labels (1)}
        "1207" + b"receive".hex() +   # 2 ComponentType
        "1a06" "0801" "1002" "2801")  # 3 store {min_time 1, max_time 2, supports_wrl (5)}
    wr = rpc_pb2.WriteRequest(
        timeseries=[prompb_pb2.TimeSeries(labels=[labels_pb2.Label(name="a", value="b")],
                                          samples=[prompb_pb2.Sample(value=1.0, timestamp=5)])],
        tenant="t", replica=2)
    assert wr.SerializeToString() == bytes.fromhex(
        "0a15" "0a06" "0a0161120162"  # 1 timeseries: TimeSeries{labels (1)
        "120b" "09" + struct.pack("<d", 1.0).hex() + "1005"  # samples (2) {value 1, ts 2}}
        "120174"                      # 2 tenant "t"
        "1802")                       # 3 replica 2
    # The same TimeSeries bytes are a prometheus_copy.WriteRequest (the router forwards them).
    rw = remote_pb2.WriteRequest(timeseries=wr.timeseries)
    assert rw.SerializeToString() == wr.SerializeToString()[:23]


def test_prometheus_copy_histogram_field_numbers():
    h = prompb_pb2.Histogram(
        count_int=3, schema=-1,
        positive_spans=[prompb_pb2.BucketSpan(offset=-2, length=2)], positive_deltas=[1, -1],
        reset_hint=prompb_pb2.Histogram.GAUGE, timestamp=7)
    assert h.SerializeToString() == bytes.fromhex(
        "0803"            # 1 count_int
        "2001"            # 4 schema, sint32 zigzag(-1) = 1
        "5a04" "0803" "1002"  # 11 positive_spans {offset zigzag(-2) = 3, length 2}
        "62020201"        # 12 positive_deltas packed sint64 zigzag [2, 1]
        "7003"            # 14 reset_hint GAUGE
        "7807")           # 15 timestamp
    f = prompb_pb2.Histogram.DESCRIPTOR.fields_by_name
    assert [f[n].number for n in ("count_float", "sum", "zero_threshold", "zero_count_int",
                                  "zero_count_float", "negative_spans", "negative_deltas",
                                  "negative_counts", "positive_counts", "custom_values")] == \
        [2, 3, 5, 6, 7, 8, 9, 10, 13, 16]
    ex = prompb_pb2.TimeSeries.DESCRIPTOR.fields_by_name
    assert (ex["exemplars"].number, ex["histograms"].number) == (3, 4)
    md = prompb_pb2.MetricMetadata.DESCRIPTOR.fields_by_name
    assert [md[n].number for n in ("type", "metric_family_name", "help", "unit")] == [1, 2, 4, 5]
    assert remote_pb2.WriteRequest.DESCRIPTOR.fields_by_name["metadata"].number == 3


def test_packages_services_and_method_paths():
    assert rpc_pb2.DESCRIPTOR.package == "thanos"
    assert info_pb2.DESCRIPTOR.package == "thanos.info"
    assert prompb_pb2.DESCRIPTOR.package == remote_pb2.DESCRIPTOR.package == "prometheus_copy"
    assert hints_pb2.DESCRIPTOR.package == "hintspb"
    assert rpc_pb2.WriteRequest.DESCRIPTOR.fields_by_name["timeseries"].message_type.full_name \
        == "prometheus_copy.TimeSeries"
    paths = {f"/{s.full_name}/{m.name}"
             for mod in (rpc_pb2, info_pb2) for s in mod.DESCRIPTOR.services_by_name.values()
             for m in s.methods}
    assert paths == {"/thanos.Store/Info", "/thanos.Store/Series", "/thanos.Store/LabelNames",
                     "/thanos.Store/LabelValues", "/thanos.WriteableStore/RemoteWrite",
                     "/thanos.info.Info/Info"}
    series = rpc_pb2.DESCRIPTOR.services_by_name["Store"].methods_by_name["Series"]
    assert series.server_streaming and not series.client_streaming
    assert types_pb2.Chunk.Encoding.items() == [("XOR", 0), ("HISTOGRAM", 1),
                                               ("FLOAT_HISTOGRAM", 2)]
    assert types_pb2.LabelMatcher.Type.items() == [("EQ", 0), ("NEQ", 1), ("RE", 2), ("NRE", 3)]
    assert rpc_pb2.StoreType.Value("RECEIVE") == 5 and rpc_pb2.Aggr.Value("COUNTER") == 5


# --- server + client ------------------------------------------------------------------------

@pytest.mark.parametrize("matcher,expected", [
    (Matcher(MatchType.EQ, "job", "api"), ["a:1", "a:1", "b:1"]),
    (Matcher(MatchType.NEQ, "job", "api"), ["c:1"]),
    (Matcher(MatchType.RE, "instance", "[ab]:.*"), ["a:1", "a:1", "b:1"]),
    (Matcher(MatchType.NRE, "instance", "a.*"), ["b:1", "c:1"]),
    (Matcher(MatchType.EQ, "code", ""), ["a:1", "b:1", "c:1"]),  # missing label == ""
])
def test_series_each_matcher_type(matcher, expected):
    src = FakeSource(SERIES)

    async def body(client: StoreClient, _):
        got = await client.series(0, 10_000, [matcher])
        assert [dict(s.labels)["instance"] for s in got] == expected
        assert [s.labels for s in got] == sorted(s.labels for s in got)
        by_labels = dict(SERIES)
        for s in got:
            assert s.chunks == by_labels[s.labels]
        assert src.calls == [("series", 0, 10_000, [matcher], False)]

    run(lambda: with_store(src, body))


def test_series_time_filtering_and_skip_chunks():
    src = FakeSource(SERIES)

    async def body(client: StoreClient, _):
        got = await client.series(2500, 3500, [Matcher(MatchType.EQ, "__name__", "up")])
        assert [(dict(s.labels)["instance"], s.chunks) for s in got] == [
            ("a:1", [chunk(2000, 2999), chunk(3000, 3999)])]  # b:1, c:1 have nothing in range
        got = await client.series(3999, 5000, [Matcher(MatchType.RE, "job", ".+")])
        assert [(dict(s.labels)["instance"], [c[:2] for c in s.chunks]) for s in got] == [
            ("a:1", [(1000, 4000)]), ("a:1", [(3000, 3999)]), ("c:1", [(5000, 5999)])]
        got = await client.series(0, 10_000, [Matcher(MatchType.EQ, "__name__", "up")],
                                  skip_chunks=True)
        assert [s.labels for s in got] == sorted(ls for ls, _ in SERIES if ("__name__", "up") in ls)
        assert all(s.chunks == [] for s in got)
        assert src.calls[-1][-1] is True

    run(lambda: with_store(src, body))


def test_series_frames_via_generated_stub_batching_limit_and_replica_labels():
    src = FakeSource(SERIES)
    match_all = [types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value=".*")]

    async def body(_, channel):
        stub = rpc_pb2_grpc.StoreStub(channel)
        frames = [f async for f in stub.Series(rpc_pb2.SeriesRequest(
            min_time=0, max_time=10_000, matchers=match_all))]
        assert [f.WhichOneof("result") for f in frames] == ["series"] * 4
        assert [tuple((lb.name, lb.value) for lb in f.series.labels) for f in frames] == \
            sorted(ls for ls, _ in SERIES)
        first = frames[0].series.chunks[0]
        assert first.raw.type == types_pb2.Chunk.XOR and first.raw.data == b"xor1000-4000"
        assert (first.min_time, first.max_time) == (1000, 4000)

        frames = [f async for f in stub.Series(rpc_pb2.SeriesRequest(
            min_time=0, max_time=10_000, matchers=match_all, response_batch_size=3))]
        assert [(f.WhichOneof("result"), len(f.batch.series)) for f in frames] == [
            ("batch", 3), ("batch", 1)]

        frames = [f async for f in stub.Series(rpc_pb2.SeriesRequest(
            min_time=0, max_time=10_000, matchers=match_all, limit=2))]
        assert len(frames) == 2

        # replica is an external label, so it is stripped; job is not, so it stays.
        frames = [f async for f in stub.Series(rpc_pb2.SeriesRequest(
            min_time=0, max_time=10_000, matchers=match_all, skip_chunks=True,
            without_replica_labels=["replica", "job"]))]
        got = [tuple((lb.name, lb.value) for lb in f.series.labels) for f in frames]
        assert got == sorted(tuple(p for p in ls if p[0] != "replica") for ls, _ in SERIES)

    run(lambda: with_store(src, body))


def test_label_names_and_values():
    src = FakeSource(SERIES)

    async def body(client: StoreClient, channel):
        assert await client.label_names(0, 10_000) == [
            "__name__", "code", "instance", "job", "replica", "tenant_id"]
        assert await client.label_names(0, 10_000, [Matcher(MatchType.EQ, "job", "db")]) == [
            "__name__", "instance", "job", "replica", "tenant_id"]
        assert await client.label_values("instance", 0, 10_000) == ["a:1", "b:1", "c:1"]
        assert await client.label_values(
            "instance", 5, 6, [Matcher(MatchType.NRE, "instance", "a.*")]) == ["b:1", "c:1"]
        assert src.calls[-1] == ("label_values", "instance", 5, 6,
                                 [Matcher(MatchType.NRE, "instance", "a.*")])
        stub = rpc_pb2_grpc.StoreStub(channel)
        r = await stub.LabelValues(rpc_pb2.LabelValuesRequest(label="__name__", limit=1))
        assert list(r.values) == ["http_requests_total"]
        r = await stub.LabelNames(rpc_pb2.LabelNamesRequest(without_replica_labels=["replica"]))
        assert "replica" not in r.names and "tenant_id" in r.names
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.LabelValues(rpc_pb2.LabelValuesRequest(label=""))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(lambda: with_store(src, body))


def test_info_both_services():
    src = FakeSource(SERIES, trange=(1000, 9000))

    async def body(client: StoreClient, channel):
        info = await client.info()
        assert (info.label_sets, info.min_time, info.max_time) == ([EXT_A, EXT_B], 1000, 9000)
        assert info.component_type == "receive" and info.supports_without_replica_labels
        r = await info_pb2_grpc.InfoStub(channel).Info(info_pb2.InfoRequest())
        assert r.ComponentType == "receive" and r.HasField("store")
        assert not r.HasField("rules") and not r.HasField("exemplars")
        assert [[(lb.name, lb.value) for lb in s.labels] for s in r.label_sets] == [
            list(EXT_A), list(EXT_B)]
        old = await rpc_pb2_grpc.StoreStub(channel).Info(rpc_pb2.InfoRequest())
        assert (old.min_time, old.max_time, old.storeType) == (1000, 9000, rpc_pb2.RECEIVE)
        assert len(old.label_sets) == 2 and old.label_sets[1].labels[1].value == "b"

    run(lambda: with_store(src, body))


def test_info_empty_store_range_and_fallback_to_store_info():
    src = FakeSource([], label_sets=[], trange=(MAX_INT64, MIN_INT64))

    async def main():
        server = grpc.aio.server(options=GRPC_OPTIONS)
        server.add_generic_rpc_handlers(StoreServer(src, "sidecar").handlers()[:1])  # no Info svc
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = StoreClient(f"127.0.0.1:{port}")
        try:
            info = await client.info()
            assert (info.label_sets, info.min_time, info.max_time) == ([], MAX_INT64, MIN_INT64)
            assert info.component_type == "sidecar"
        finally:
            await client.close()
            await server.stop(None)

    run(main)


def test_errors_bad_regex_unknown_type_and_source_failure():
    src = FakeSource(SERIES)

    async def body(client: StoreClient, channel):
        for call in (lambda: client.series(0, 1, [Matcher(MatchType.EQ, "a", "b")]
                                           + [_bad_regex()]),
                     lambda: client.label_names(0, 1, [_bad_regex()]),
                     lambda: client.label_values("job", 0, 1, [_bad_regex()])):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call()
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "invalid regex" in e.value.details()
        stub = rpc_pb2_grpc.StoreStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            _ = [f async for f in stub.Series(rpc_pb2.SeriesRequest(matchers=[
                types_pb2.LabelMatcher(type=9, name="job", value="x")]))]
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for fail_after in (0, 2):  # before the first frame, and mid-stream
            src.fail_after = fail_after
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await client.series(0, 10_000, [Matcher(MatchType.RE, "job", ".*")])
            assert e.value.code() == grpc.StatusCode.INTERNAL
            assert "disk on fire" in e.value.details()
        frames = []
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for f in stub.Series(rpc_pb2.SeriesRequest(max_time=10_000, matchers=[
                    types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value=".*")])):
                frames.append(f)
        assert len(frames) == 2 and e.value.code() == grpc.StatusCode.INTERNAL

    run(lambda: with_store(src, body))


def test_repeated_matcher_sets_answer_alike_and_their_memo_is_bounded():
    """Matcher sets are reused between calls: same set, same answer; a set differing only in
    a matcher's type is another set; a bad regex is refused every time; the memo stays
    bounded however many distinct sets arrive."""
    src = FakeSource(SERIES)

    async def body(client: StoreClient, channel):
        eq = [Matcher(MatchType.EQ, "job", "api")]
        first = await client.series(0, 10_000, eq)
        assert [s.labels for s in await client.series(0, 10_000, eq)] == \
            [s.labels for s in first] and len(first) == 3
        neq = await client.series(0, 10_000, [Matcher(MatchType.NEQ, "job", "api")])
        assert [s.labels for s in neq] == [SERIES[2][0]]
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await client.series(0, 1, [_bad_regex()])
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(lambda: with_store(src, body))

    server = StoreServer(src)

    async def many_sets() -> None:
        for i in range(600):
            got = await server._matchers(  # noqa: SLF001 -- the memo's bound is the subject
                [types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job",
                                        value=f"a{i}.*")], None)
            assert got == [Matcher(MatchType.RE, "job", f"a{i}.*")]
        big = [types_pb2.LabelMatcher(name="job", value="x" * 5000)]
        assert (await server._matchers(big, None))[0].value == "x" * 5000  # noqa: SLF001
        assert len(server._matcher_memo) <= 512  # noqa: SLF001

    run(many_sets)


def _bad_regex() -> Matcher:
    """An RE matcher with an invalid regex that skipped local compilation, so the request
    reaches the server (whose validation is under test)."""
    m = Matcher(MatchType.EQ, "job", "(unclosed")
    object.__setattr__(m, "type", MatchType.RE)
    return m


def test_remote_write_path_on_writeable_store():
    got: list[rpc_pb2.WriteRequest] = []

    async def writer(req: rpc_pb2.WriteRequest, context) -> rpc_pb2.WriteResponse:
        got.append(req)
        return rpc_pb2.WriteResponse()

    async def body(_, channel):
        req = rpc_pb2.WriteRequest(tenant="t1", replica=1, timeseries=[prompb_pb2.TimeSeries(
            labels=[labels_pb2.Label(name="__name__", value="up")],
            samples=[prompb_pb2.Sample(value=1, timestamp=2)])])
        # A raw call by path proves the exact method name, independent of generated stubs.
        call = channel.unary_unary("/thanos.WriteableStore/RemoteWrite",
                                   request_serializer=rpc_pb2.WriteRequest.SerializeToString,
                                   response_deserializer=rpc_pb2.WriteResponse.FromString)
        assert await call(req) == rpc_pb2.WriteResponse()
        await rpc_pb2_grpc.WriteableStoreStub(channel).RemoteWrite(req)
        assert got == [req, req]

    run(lambda: with_store(FakeSource(SERIES), body, writer=writer))


def test_raw_method_paths_series_and_info():
    async def body(_, channel):
        series = channel.unary_stream(
            "/thanos.Store/Series", request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
            response_deserializer=rpc_pb2.SeriesResponse.FromString)
        frames = [f async for f in series(rpc_pb2.SeriesRequest(
            max_time=10_000, matchers=[types_pb2.LabelMatcher(name="job", value="db")]))]
        assert len(frames) == 1 and frames[0].series.chunks[1].max_time == 9000
        info = channel.unary_unary(
            "/thanos.info.Info/Info", request_serializer=info_pb2.InfoRequest.SerializeToString,
            response_deserializer=info_pb2.InfoResponse.FromString)
        assert (await info(info_pb2.InfoRequest())).store.max_time == 9000
        missing = channel.unary_unary("/thanos.Store/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await missing(b"")
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED

    run(lambda: with_store(FakeSource(SERIES), body))


def test_client_merges_split_frames_and_reports_warnings():
    """Thanos may split one series over several frames, and send warnings and hints frames."""
    ls = [labels_pb2.Label(name="__name__", value="m")]
    other = [labels_pb2.Label(name="__name__", value="n")]

    def agg(t: int, typ=types_pb2.Chunk.XOR):
        return types_pb2.AggrChunk(min_time=t, max_time=t + 1,
                                   raw=types_pb2.Chunk(type=typ, data=bytes([t])))

    frames = [
        rpc_pb2.SeriesResponse(series=types_pb2.Series(labels=ls, chunks=[agg(1)])),
        rpc_pb2.SeriesResponse(warning="store x down"),
        rpc_pb2.SeriesResponse(series=types_pb2.Series(labels=ls, chunks=[agg(3)])),
        rpc_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(series=[
            types_pb2.Series(labels=ls, chunks=[agg(5)]),
            types_pb2.Series(labels=other, chunks=[agg(7), agg(9, types_pb2.Chunk.HISTOGRAM)])])),
        rpc_pb2.SeriesResponse(hints=any_pb2.Any(
            type_url="type.googleapis.com/hintspb.SeriesResponseHints",
            value=hints_pb2.SeriesResponseHints(
                queried_blocks=[hints_pb2.Block(id="01J")]).SerializeToString())),
    ]
    seen: list[rpc_pb2.SeriesRequest] = []

    async def series(req, context):
        seen.append(req)
        for f in frames:
            yield f

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("thanos.Store", {
            "Series": grpc.unary_stream_rpc_method_handler(
                series, rpc_pb2.SeriesRequest.FromString,
                rpc_pb2.SeriesResponse.SerializeToString)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = StoreClient(f"127.0.0.1:{port}", series_batch_size=64)
        try:
            res = await client.series_with_warnings(
                0, 100, [Matcher(MatchType.EQ, "__name__", "m")], partial_response=True)
            assert res.series == [
                RawSeries((("__name__", "m"),), [(1, 2, b"\x01"), (3, 4, b"\x03"), (5, 6, b"\x05")]),
                RawSeries((("__name__", "n"),), [(7, 8, b"\x07")])]
            assert res.warnings[0] == "store x down" and "ignored 1 chunks" in res.warnings[1]
            req = seen[0]
            assert (req.min_time, req.max_time, req.response_batch_size) == (0, 100, 64)
            assert req.partial_response_strategy == types_pb2.WARN
            assert list(req.matchers) == [types_pb2.LabelMatcher(name="__name__", value="m")]
        finally:
            await client.close()
            await server.stop(None)

    run(main)


async def raw_frames_store(frames: list[bytes]) -> tuple[grpc.aio.Server, str]:
    """A started gRPC server whose Store.Series answers ``frames`` as they are; its address."""
    async def series(req, context):
        for f in frames:
            yield f

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("thanos.Store", {
        "Series": grpc.unary_stream_rpc_method_handler(
            series, rpc_pb2.SeriesRequest.FromString, None)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def test_a_malformed_series_frame_fails_the_endpoint_cleanly():
    """A frame protobuf cannot parse (here a label value that is not UTF-8) fails the call as a
    ValueError; the querier's fan-out reports the endpoint (an error, or a warning with partial
    responses) and keeps the other endpoints' answers, as before the frames were decoded in C."""
    from querier.fanout import SelectOptions, StoreSet, StoreUnavailable

    good = rpc_pb2.SeriesResponse(series=types_pb2.Series(labels=[
        labels_pb2.Label(name="__name__", value="m")])).SerializeToString()
    bad = b"\x0a\x0b\x0a\x09\x0a\x03job\x12\x02\xff\xfe"  # series{labels{job=<not UTF-8>}}

    async def main():
        server, address = await raw_frames_store([good, bad])
        client = StoreClient(address)
        stores = StoreSet([address])
        ms = [Matcher(MatchType.EQ, "__name__", "m")]
        try:
            with pytest.raises(ValueError, match="malformed SeriesResponse frame"):
                await client.series_with_warnings(0, 100, ms)
            with pytest.raises(StoreUnavailable, match="malformed SeriesResponse frame"):
                await stores.series(0, 100, ms)
            warnings: list[str] = []
            assert await stores.series(0, 100, ms, opts=SelectOptions(partial_response=True),
                                       warnings=warnings) == []
            assert warnings == [f"endpoint {address}: malformed SeriesResponse frame"]
        finally:
            await client.close()
            await stores.close()
            await server.stop(None)

    run(main)


def test_series_say_whether_they_may_hold_histogram_chunks():
    """RawSeries.histograms is False only when the decoder kept no native histogram chunk of
    the series, also when the store splits it over frames (the querier then skips looking at
    every chunk); otherwise None."""
    def frame(name: str, typ: int) -> bytes:
        return rpc_pb2.SeriesResponse(series=types_pb2.Series(
            labels=[labels_pb2.Label(name="__name__", value=name)],
            chunks=[types_pb2.AggrChunk(min_time=1, max_time=2, raw=types_pb2.Chunk(
                type=typ, data=b"\x01"))])).SerializeToString()

    xor, hist = types_pb2.Chunk.XOR, types_pb2.Chunk.HISTOGRAM
    frames = [frame("a", xor), frame("b", xor), frame("b", hist), frame("c", hist),
              frame("d", xor)]

    async def main():
        server, address = await raw_frames_store(frames)
        native, plain = StoreClient(address, native_histograms=True), StoreClient(address)
        ms = [Matcher(MatchType.EQ, "__name__", "m")]
        try:
            got = await native.series_with_warnings(0, 100, ms)
            assert [(s.labels[0][1], len(s.chunks), s.histograms) for s in got.series] == [
                ("a", 1, False), ("b", 2, None), ("c", 1, None), ("d", 1, False)]
            got = await plain.series_with_warnings(0, 100, ms)
            assert [(s.labels[0][1], len(s.chunks), s.histograms) for s in got.series] == [
                ("a", 1, False), ("b", 1, False), ("c", 0, False), ("d", 1, False)]
        finally:
            await native.close()
            await plain.close()
            await server.stop(None)

    run(main)


def test_many_series_round_trip_with_batches():
    many = [(lbls(__name__="m", i=f"{i:05d}", tenant_id="a"), [chunk(i, i + 10)])
            for i in range(3000)]
    src = FakeSource(many)

    async def body(client: StoreClient, _):
        got = await client.series(0, 1 << 40, [Matcher(MatchType.EQ, "__name__", "m")])
        assert [(s.labels, s.chunks) for s in got] == sorted(many)

    run(lambda: with_store(src, body))
