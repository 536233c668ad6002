"""Store gateway Series frames are the same bytes whichever path produced them: cold reads or
the warm cache (expanded postings, series, chunks), and the small-selection list path or the
numpy path for picking chunks in range. Raw frames over the real StoreAPI, so a difference in
any field, order or batching shows."""
from __future__ import annotations

import sys
from pathlib import Path

import grpc.aio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import store.block  # noqa: E402
import store.bucketstore  # noqa: E402
from objstore import FilesystemBucket  # noqa: E402
from receiver.tsdb.labels import Matcher  # noqa: E402
from store.server import StoreGateway  # noqa: E402
from storeapi import hints_pb2, rpc_pb2, types_pb2  # noqa: E402
from storeapi.client import StoreClient  # noqa: E402
from test_store_gateway import (ALL, H2, T0, check_series, expected, make_series, run,  # noqa: E402
                                upload_dir, with_gateway, write)

_TYPES = {"=": types_pb2.LabelMatcher.EQ, "!=": types_pb2.LabelMatcher.NEQ,
          "=~": types_pb2.LabelMatcher.RE, "!~": types_pb2.LabelMatcher.NRE}
# 150 series over 5 names: a name selects 30 series, 4 chunks each per block (numpy path);
# an instance one series (list path).
SELECTORS = [
    [("=", "__name__", "metric_2"), ("=", "instance", "host-00007")],
    [("=", "__name__", "metric_2")],
    [("=~", "__name__", "metric_[13]"), ("=", "env", "prod")],
    [("=~", "instance", "host-0000[1-4]")],
    [("=", "__name__", "metric_2"), ("!=", "job", "job1"), ("!~", "instance", "host-001.*")],
    [("=", "__name__", "metric_0"), ("=", "env", "")],
    [("=", "__name__", "nope")],
    [("=", "__name__", "metric_2"), ("=", "instance", "host-nope")],
]
RANGES = [ALL, (T0 + H2 + 1_800_000, T0 + H2 + 5_400_000),  # inside one block
          (T0 + H2 - 600_000, T0 + 2 * H2 + 1_000)]  # across a block boundary


def _request(ms: list[tuple[str, str, str]], mint: int, maxt: int, skip: bool
             ) -> rpc_pb2.SeriesRequest:
    req = rpc_pb2.SeriesRequest(min_time=mint, max_time=maxt, skip_chunks=skip,
                                response_batch_size=16, matchers=[
                                    types_pb2.LabelMatcher(type=_TYPES[t], name=n, value=v)
                                    for t, n, v in ms])
    req.hints.Pack(hints_pb2.SeriesRequestHints())
    return req


async def _all_frames(gw: StoreGateway) -> list[bytes]:
    """The raw response bytes of every selector x range x skip_chunks, in order."""
    out = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.ports['grpc']}") as ch:
        call = ch.unary_stream("/thanos.Store/Series",
                               request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                               response_deserializer=lambda b: b)
        for ms in SELECTORS:
            for mint, maxt in RANGES:
                for skip in (False, True):
                    out.append(b"\0".join([f async for f in call(_request(ms, mint, maxt, skip))]))
    return out


@pytest.fixture
def bucket_dir(tmp_path: Path) -> Path:
    for i in range(3):
        series = make_series(150, T0 + i * H2, H2, seed=20 + i)
        bdir = write(tmp_path / f"b{i}", series, T0 + i * H2, T0 + (i + 1) * H2)
        run(upload_dir(FilesystemBucket(tmp_path / "bucket"), bdir))
    return tmp_path / "bucket"


def test_series_frames_identical_cold_warm_and_on_both_chunk_paths(
        tmp_path: Path, bucket_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, list[bytes]] = {}

    async def uncached(gw: StoreGateway, client: StoreClient) -> None:
        answers["uncached"] = await _all_frames(gw)  # every call reads the bucket

    async def cached(gw: StoreGateway, client: StoreClient) -> None:
        answers["cold"] = await _all_frames(gw)
        answers["warm"] = await _all_frames(gw)
        assert gw.cache.size > 0 and added(gw, "chunks") > 0
        monkeypatch.setattr(store.block, "SMALL_SELECTION", 0)  # numpy for every selection
        answers["numpy"] = await _all_frames(gw)
        monkeypatch.setattr(store.block, "SMALL_SELECTION", 1 << 30)  # lists for all
        answers["lists"] = await _all_frames(gw)

    def added(gw: StoreGateway, kind: str) -> float:
        return gw.registry.get_sample_value("thanos_store_index_cache_items_added_total",
                                            {"item_type": kind}) or 0.0

    async def windowed(gw: StoreGateway, client: StoreClient) -> None:
        st = gw.store
        assert st is not None
        answers["windowed"] = await _all_frames(gw)
        assert st._fetch_bytes.used == 0 and st._fetch_bytes.peak > 0
        # a big read's chunks are not kept (as in Thanos), its series entries are
        assert added(gw, "chunks") == 0 and added(gw, "series") > 0
        answers["windowed warm"] = await _all_frames(gw)

    run(with_gateway(tmp_path / "a", FilesystemBucket(bucket_dir), uncached, cache_bytes=0))
    run(with_gateway(tmp_path / "b", FilesystemBucket(bucket_dir), cached))
    # every selection a big one (read by each block, not the memo's small-selection path),
    # every read a big one: range by range within a budget smaller than a range (each goes
    # alone), its chunks not kept in the cache
    monkeypatch.setattr(store.bucketstore, "MAX_SERIES", 0)
    monkeypatch.setattr(store.block, "BIG_READ", 0)
    monkeypatch.setattr(store.bucketstore, "FETCH_BYTES_IN_FLIGHT", 256)
    run(with_gateway(tmp_path / "c", FilesystemBucket(bucket_dir), windowed))
    ref = answers.pop("uncached")
    assert len(ref) == len(SELECTORS) * len(RANGES) * 2
    assert sum(map(len, ref)) > 100_000 and any(len(r) < 200 for r in ref)  # big and empty
    for name, got in answers.items():
        assert got == ref, name


def test_repeated_selection_is_served_from_expanded_postings(tmp_path: Path,
                                                             bucket_dir: Path) -> None:
    """A warm repeat of a selection decodes no postings list again, and answers right."""
    parts = [(make_series(150, T0 + i * H2, H2, seed=20 + i), {}, T0 + i * H2,
              T0 + (i + 1) * H2) for i in range(3)]
    want = expected(parts, *ALL)
    query = [Matcher("=", "__name__", "metric_2"), Matcher("=~", "instance", "host-00[0-4].*")]

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        def count(what: str, kind: str) -> float:
            return gw.registry.get_sample_value(f"thanos_store_index_cache_{what}_total",
                                                {"item_type": kind}) or 0.0
        await check_series(client, want, *ALL, query)
        postings, hits = count("requests", "postings"), count("hits", "expanded_postings")
        assert postings > 0
        await check_series(client, want, *ALL, query)
        assert count("requests", "postings") == postings  # no postings list looked up again
        assert count("hits", "expanded_postings") == hits + 3  # one hit per block

    run(with_gateway(tmp_path, FilesystemBucket(bucket_dir), body))


def test_broad_selection_is_not_kept_as_expanded_postings(tmp_path: Path, bucket_dir: Path
                                                          ) -> None:
    """An expanded postings entry may take only a small part of the cache budget (1/64): a
    broad selection must not flush everything else; nor is one kept whose matchers (its key,
    not counted in the budget) are long. Both still answer right."""
    parts = [(make_series(150, T0 + i * H2, H2, seed=20 + i), {}, T0 + i * H2,
              T0 + (i + 1) * H2) for i in range(3)]
    want = expected(parts, *ALL)

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        def added() -> float:
            return gw.registry.get_sample_value("thanos_store_index_cache_items_added_total",
                                                {"item_type": "expanded_postings"}) or 0.0
        await check_series(client, want, *ALL, [Matcher("=", "__name__", "metric_2")])
        assert added() == 3  # 30 refs per block: 120 bytes, under 16 KiB / 64
        await check_series(client, want, *ALL, [Matcher("=~", "job", "job.*")])
        assert added() == 3  # 150 refs per block: 600 bytes, over it
        long_regex = "|".join(f"host-{i:05d}" for i in range(0, 150, 5))  # 329 characters
        await check_series(client, want, *ALL, [Matcher("=~", "instance", long_regex)])
        assert added() == 3  # 30 refs, but a key too long to keep out of the budget

    run(with_gateway(tmp_path, FilesystemBucket(bucket_dir), body, cache_bytes=16 << 10))


def test_cold_one_series_read_from_the_page_cache_never_leaves_the_call(
        tmp_path: Path, bucket_dir: Path) -> None:
    """A series never asked for (a new matcher: its postings list, series entry and chunk
    read from the bucket in every block) completes without suspending when the filesystem
    bucket's reads come from the page cache: no Task and no event-loop round trip per block
    or per ranged read (what a cold one-series dashboard query paid most for). The answer is
    the one a normal await gives, and the reads are counted."""
    from common.aio import _resume
    from test_objstore_fs_reads import _nowait_works
    if not _nowait_works(tmp_path):
        pytest.skip("no non-blocking reads (RWF_NOWAIT) here: every ranged read goes to a "
                    "worker thread, so a cold read must suspend")
    name = Matcher("=", "__name__", "metric_2")

    async def body(gw: StoreGateway, client: StoreClient) -> None:
        st = gw.store
        assert st is not None
        mint, maxt = st.time_range()

        def reads() -> float:
            return gw.registry.get_sample_value("promring_store_bucket_range_requests_total",
                                                {"item_type": "postings"}) or 0.0
        await st.series(mint, maxt, [name], False)  # the dashboard's broad query ran first
        for host in ("host-00012", "host-00017"):  # metric_2's series: instance % 5 == 2
            before = reads()
            coro = st.series(mint, maxt, [name, Matcher("=", "instance", host)], False)
            try:
                first = coro.send(None)
            except StopIteration as done:
                got, suspended = list(done.value), False
            else:  # finish it properly, then fail
                got, suspended = list(await _resume(coro, first)), True
            assert not suspended, "a cold read from the page cache suspended"
            assert reads() == before + 3  # the new instance's postings list, once per block
            assert got == await _uncached(tmp_path / host, bucket_dir, mint, maxt,
                                          [name, Matcher("=", "instance", host)])
            assert len(got) == 1 and sum(len(cs) for _, cs in got) >= 3

    run(with_gateway(tmp_path / "gw", FilesystemBucket(bucket_dir), body))


async def _uncached(data_dir: Path, bucket_dir: Path, mint: int, maxt: int,
                    ms: list[Matcher]) -> list:
    """The same selection from a store with no cache, awaited normally."""
    from common.ops import new_registry
    from store.bucketstore import BucketStore
    from store.cache import LRUCache
    st = BucketStore(FilesystemBucket(bucket_dir), data_dir, LRUCache(0), new_registry(),
                     verify_index=False)
    await st.sync_once()
    try:
        return list(await st.series(mint, maxt, ms, False))
    finally:
        await st.close()


def test_fetch_metrics_count_as_the_plain_counters_inc_would() -> None:
    """FetchMetrics.fetched counts a batch in its two plain counters: the exported values
    after a few batches (a kind outside the seeded ones too) are their sums, the seeded kinds
    exported from the start."""
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    m = store.block.FetchMetrics(reg)
    text = generate_latest(reg).decode()
    assert 'promring_store_bucket_range_requests_total{item_type="series"} 0.0' in text
    for kind, requests, nbytes in [("postings", 3, 120), ("chunks", 1, 7), ("postings", 2, 0),
                                   ("other", 1, 5)]:
        m.fetched(kind, requests, nbytes)
    v = reg.get_sample_value
    assert [v("promring_store_bucket_range_requests_total", {"item_type": k})
            for k in ("postings", "series", "chunks", "other")] == [5, 0, 1, 1]
    assert [v("promring_store_bucket_fetched_bytes_total", {"item_type": k})
            for k in ("postings", "series", "chunks", "other")] == [120, 0, 7, 5]


def test_index_matchers_decide_external_labels_and_leave_the_rest_in_order() -> None:
    """BucketBlock.index_matchers: matchers on no external label (the usual) are all left,
    in order, as a new list; one on an external label is decided by the
    block's value (dropped when it matches, the block ruled out when not)."""
    from types import SimpleNamespace

    name, inst = Matcher("=", "__name__", "x"), Matcher("=", "instance", "i-00012")
    on_ext = {"replica": "a", "region": "eu"}
    for ext, ms, want in [
            ({}, [name, inst], [name, inst]), (on_ext, [name, inst], [name, inst]),
            (on_ext, [], []), (on_ext, [name, Matcher("=", "replica", "a"), inst], [name, inst]),
            (on_ext, [Matcher("=~", "region", "e.*"), name], [name]),
            (on_ext, [name, Matcher("!=", "replica", "a")], None),
            (on_ext, [Matcher("=", "region", "us"), inst], None)]:
        got = store.block.BucketBlock.index_matchers(SimpleNamespace(_ext=ext), ms)
        assert got == want, (ext, ms)
        assert got is not ms
