"""StoreAPI details where promring answers as Thanos does: no matchers is InvalidArgument,
shard_info sharding (Thanos's label hash) advertised and honoured, SeriesResponseHints."""
from __future__ import annotations

import grpc
import grpc.aio
import pytest
import xxhash

from storeapi import hints_pb2, info_pb2, info_pb2_grpc, rpc_pb2, rpc_pb2_grpc, types_pb2

from test_storeapi import SERIES, FakeSource, run, with_store

MATCH_ALL = [types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="job", value=".*")]


def _labels(frames) -> list[tuple]:
    return [tuple((lb.name, lb.value) for lb in f.series.labels) for f in frames
            if f.WhichOneof("result") == "series"]


def test_series_without_matchers_is_invalid_argument():
    async def body(_, channel):
        stub = rpc_pb2_grpc.StoreStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            _ = [f async for f in stub.Series(rpc_pb2.SeriesRequest(min_time=0, max_time=10_000))]
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ei.value.details() == "no matchers specified (excluding external labels)"

    run(lambda: with_store(FakeSource(SERIES), body))


def _thanos_shard(lbls: tuple, total: int, by: bool, names: set[str]) -> int:
    """Thanos's ShardMatcher, written out from its definition."""
    key = b"".join(n.encode() + b"\xff" + v.encode() + b"\xff"
                   for n, v in lbls if (n in names) == by)
    return xxhash.xxh64_intdigest(key) % total


@pytest.mark.parametrize("by,names", [(True, {"instance"}), (False, {"instance"}),
                                      (False, set()), (True, {"job", "tenant_id"})])
def test_shards_partition_series_by_thanos_hash(by, names):
    total = 3

    async def body(_, channel):
        info = await info_pb2_grpc.InfoStub(channel).Info(info_pb2.InfoRequest())
        assert info.store.supports_sharding
        stub = rpc_pb2_grpc.StoreStub(channel)
        shards = []
        for i in range(total):
            shards.append(_labels([f async for f in stub.Series(rpc_pb2.SeriesRequest(
                min_time=0, max_time=10_000, matchers=MATCH_ALL, skip_chunks=True,
                shard_info=rpc_pb2.ShardInfo(shard_index=i, total_shards=total, by=by,
                                             labels=sorted(names))))]))
        return shards

    out = {}

    async def capture(client, channel):
        out["shards"] = await body(client, channel)

    run(lambda: with_store(FakeSource(SERIES), capture))
    everything = sorted(ls for ls, _ in SERIES)
    assert sorted(s for shard in out["shards"] for s in shard) == everything
    for i, shard in enumerate(out["shards"]):
        assert shard == [s for s in everything if _thanos_shard(s, total, by, names) == i]


def test_shard_hash_uses_labels_after_replica_stripping():
    async def body(_, channel):
        stub = rpc_pb2_grpc.StoreStub(channel)
        got = _labels([f async for f in stub.Series(rpc_pb2.SeriesRequest(
            min_time=0, max_time=10_000, matchers=MATCH_ALL, skip_chunks=True,
            without_replica_labels=["replica"],
            shard_info=rpc_pb2.ShardInfo(shard_index=0, total_shards=2)))])
        stripped = sorted(tuple(p for p in ls if p[0] != "replica") for ls, _ in SERIES)
        assert got == [s for s in stripped if _thanos_shard(s, 2, False, set()) == 0]

    run(lambda: with_store(FakeSource(SERIES), body))


class BlockSource(FakeSource):
    """A source that knows which blocks a request reads (as the store gateway does)."""

    def queried_blocks(self, mint, maxt, max_resolution_ms, matchers):
        return ["01ARZ3NDEKTSV4RRFFQ69G5FAV"] if mint < 5000 else []


def test_series_response_hints_name_the_queried_blocks_when_asked():
    async def body(_, channel):
        stub = rpc_pb2_grpc.StoreStub(channel)
        req = rpc_pb2.SeriesRequest(min_time=0, max_time=10_000, matchers=MATCH_ALL)
        plain = [f async for f in stub.Series(req)]
        assert all(f.WhichOneof("result") == "series" for f in plain)
        req.hints.Pack(hints_pb2.SeriesRequestHints())
        frames = [f async for f in stub.Series(req)]
        assert [f.WhichOneof("result") for f in frames] == ["series"] * len(SERIES) + ["hints"]
        assert frames[-1].hints.type_url == "type.googleapis.com/hintspb.SeriesResponseHints"
        hints = hints_pb2.SeriesResponseHints()
        assert frames[-1].hints.Unpack(hints)
        assert [b.id for b in hints.queried_blocks] == ["01ARZ3NDEKTSV4RRFFQ69G5FAV"]

    run(lambda: with_store(BlockSource(SERIES), body))
