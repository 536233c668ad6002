"""Thanos's store gateway limits on ``promring store`` (store/limits.py): per-request series
and sample limits failing a Series call with Thanos's ResourceExhausted status and message
before anything is streamed, the Series concurrency gate, the --min-time/--max-time window of
served blocks, and the flags (Thanos's names, validated at start-up)."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from objstore import FilesystemBucket
from promring.cli import build_parser, main, store_config
from promring.flagcheck import FlagError, check_flags
from receiver.tsdb.block import write_block_from_samples
from receiver.tsdb.labels import Matcher
from store.limits import RequestLimiter, SeriesGate, StoreLimits, StoreLimitsConfig
from store.server import StoreConfig, StoreGateway
from storeapi.client import StoreClient
from storeapi.server import ResourceExhausted

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2
UP = [Matcher("=", "__name__", "up")]


def _bucket(tmp: Path) -> tuple[Path, list[str]]:
    """Two consecutive 2 h blocks, each with 3 series of 480 samples (4 chunks each)."""
    bucket = tmp / "bucket"
    bucket.mkdir()
    ulids = []
    for b in range(2):
        ts = T0 + b * H2 + np.arange(480, dtype=np.int64) * 15_000
        series = [((("__name__", "up"), ("instance", f"h{i}")), ts, ts / 1000.0 + i)
                  for i in range(3)]
        meta = write_block_from_samples(tmp / "src", series, T0 + b * H2, T0 + (b + 1) * H2,
                                        thanos_meta={"labels": {"cluster": "c"}})
        shutil.copytree(tmp / "src" / meta.ulid, bucket / meta.ulid)
        ulids.append(meta.ulid)
    return bucket, ulids


async def _with_store(tmp: Path, limits: StoreLimitsConfig, body) -> None:
    bucket, ulids = _bucket(tmp)
    gw = StoreGateway(StoreConfig(data_dir=tmp / "data", objstore_config="",
                                  grpc_address="127.0.0.1:0", http_address="",
                                  sync_interval_s=3600, limits=limits),
                      bucket=FilesystemBucket(str(bucket)))
    await gw.start()
    client = StoreClient(f"127.0.0.1:{gw.ports['grpc']}", timeout_s=30)
    try:
        await body(gw, client, ulids)
    finally:
        await client.close()
        await gw.stop()


def _dropped(gw: StoreGateway, reason: str) -> float:
    return gw.registry.get_sample_value("thanos_bucket_store_queries_dropped_total",
                                        {"reason": reason, "tenant": "default-tenant"})


def _exhausted(e: BaseException) -> str:
    assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, e
    return e.details()


# --------------------------------------------------------------------------- limiter


def test_request_limiter_words_and_counts_as_thanos() -> None:
    reg = CollectorRegistry()
    limits = StoreLimits(StoreLimitsConfig(request_series=4, request_samples=2400), reg)
    lim = limits.request()
    lim.touched_series("A", 3)
    lim.chunks("A", [0, 4, 8, 12])  # running chunk totals of 3 series
    with pytest.raises(ResourceExhausted) as e:
        lim.touched_series("B", 3)
    assert str(e.value) == ("fetch postings for block B: rpc error: code = ResourceExhausted "
                            "desc = exceeded series limit: limit 4 violated (got 6)")
    with pytest.raises(ResourceExhausted) as e:
        lim.chunks("B", [0, 4, 8, 12])  # 2400 samples = 20 chunks of 120
    assert str(e.value) == ("receive series from B: rpc error: code = ResourceExhausted "
                            "desc = exceeded chunks limit: limit 20 violated (got 24)")
    # One dropped query, whichever limits and blocks it crossed.
    assert reg.get_sample_value("thanos_bucket_store_queries_dropped_total",
                                {"reason": "series", "tenant": "default-tenant"}) == 1
    assert reg.get_sample_value("thanos_bucket_store_queries_dropped_total",
                                {"reason": "chunks", "tenant": "default-tenant"}) == 0
    assert limits.request() is not lim  # a fresh count per request


def test_no_limits_no_limiter_and_samples_under_one_chunk_are_no_limit() -> None:
    assert StoreLimits(StoreLimitsConfig(), CollectorRegistry()).request() is None
    # Thanos divides the sample limit by 120 samples a chunk: under 120 is no limit at all.
    assert StoreLimits(StoreLimitsConfig(request_samples=119), CollectorRegistry()
                       ).request() is None
    lim = StoreLimits(StoreLimitsConfig(request_samples=120), CollectorRegistry()).request()
    assert isinstance(lim, RequestLimiter)
    lim.chunks("A", [0, 1])
    with pytest.raises(ResourceExhausted):
        lim.chunks("A", [0, 1])


def test_chunks_are_reserved_series_by_series_and_up_to_the_request_limit() -> None:
    limits = StoreLimits(StoreLimitsConfig(request_series=4, request_samples=1200),
                         CollectorRegistry())
    lim = limits.request()
    lim.chunks("A", [0, 4, 8])
    with pytest.raises(ResourceExhausted) as e:  # 8 + 4 crosses 10 at the first series
        lim.chunks("B", [0, 4, 8])
    assert str(e.value).endswith("exceeded chunks limit: limit 10 violated (got 12)")
    capped = limits.request(request_limit=1)  # a Series request with limit=1
    for block in "ABCD":
        capped.touched_series(block, 3)  # counts 1 per block
        capped.chunks(block, [0, 2, 4, 6])  # counts the first series' 2 chunks
    with pytest.raises(ResourceExhausted) as e:
        capped.touched_series("E", 3)
    assert str(e.value).endswith("exceeded series limit: limit 4 violated (got 5)")


# --------------------------------------------------------------------------- Series calls


def test_series_over_the_series_limit_fails_resource_exhausted(tmp_path: Path) -> None:
    async def body(gw, client, ulids):
        with pytest.raises(grpc.RpcError) as e:  # 3 + 3 series matched in two blocks
            await client.series(T0, T0 + 2 * H2, UP)
        msg = _exhausted(e.value)
        assert msg.startswith("fetch postings for block ") and msg.split()[4][:-1] in ulids
        assert msg.endswith(": rpc error: code = ResourceExhausted desc = exceeded series "
                            "limit: limit 4 violated (got 6)")
        assert _dropped(gw, "series") == 1
        # Smaller requests still pass: one block's series, or one series over both blocks.
        assert len(await client.series(T0, T0 + H2 - 1, UP)) == 3
        got = await client.series(T0, T0 + 2 * H2, UP + [Matcher("=", "instance", "h1")])
        assert [dict(s.labels)["instance"] for s in got] == ["h1"]
        assert _dropped(gw, "series") == 1
        # The gateway is unharmed: no block taken out of service.
        assert len(gw.store.blocks) == 2
    asyncio.run(_with_store(tmp_path, StoreLimitsConfig(request_series=4), body))


def test_a_requests_own_limit_caps_what_each_block_counts_as_thanos(tmp_path: Path) -> None:
    async def body(gw, client, ulids):
        # Answers of thanos store v0.42.4 with the same flags and blocks: limit=1 reads 1
        # series of each block (2 series, 8 chunks counted); limit=2 counts 2 series x 4
        # chunks a block and crosses 10 chunks at 12, series by series.
        got = await client.series_with_warnings(T0, T0 + 2 * H2, UP, limit=1)
        assert len(got.series) == 1 and len(got.series[0].chunks) == 8
        with pytest.raises(grpc.RpcError) as e:
            await client.series_with_warnings(T0, T0 + 2 * H2, UP, limit=2)
        assert _exhausted(e.value).endswith("exceeded chunks limit: limit 10 violated (got 12)")
    asyncio.run(_with_store(tmp_path, StoreLimitsConfig(request_series=4, request_samples=1200),
                            body))


def test_label_calls_with_matchers_count_series_as_thanos(tmp_path: Path) -> None:
    async def body(gw, client, ulids):
        words = ("rpc error: code = ResourceExhausted desc = exceeded series limit: limit 4 "
                 "violated (got 6)")  # Thanos names no block step for label calls
        for call in (lambda: client.label_names(T0, T0 + 2 * H2, UP),
                     lambda: client.label_values("instance", T0, T0 + 2 * H2, UP),
                     lambda: client.label_values("cluster", T0, T0 + 2 * H2, UP)):
            with pytest.raises(grpc.RpcError) as e:
                await call()
            assert _exhausted(e.value) == words
        assert _dropped(gw, "series") == 3
        # Without matchers the index answers (no series touched); a narrow matcher passes.
        assert await client.label_names(T0, T0 + 2 * H2) == ["__name__", "cluster", "instance"]
        assert await client.label_values("instance", T0, T0 + 2 * H2,
                                         UP + [Matcher("=", "instance", "h2")]) == ["h2"]
    asyncio.run(_with_store(tmp_path, StoreLimitsConfig(request_series=4), body))


def test_series_over_the_sample_limit_fails_resource_exhausted(tmp_path: Path) -> None:
    async def body(gw, client, ulids):
        with pytest.raises(grpc.RpcError) as e:  # 6 series x 4 chunks in range > 20 chunks
            await client.series(T0, T0 + 2 * H2, UP)
        msg = _exhausted(e.value)
        assert msg.startswith("receive series from ") and msg.split()[3][:-1] in ulids
        assert msg.endswith("exceeded chunks limit: limit 20 violated (got 24)")
        assert _dropped(gw, "chunks") == 1 and _dropped(gw, "series") == 0
        # Only chunks in range count: the first 10 minutes are one chunk per series.
        assert len(await client.series(T0, T0 + 600_000, UP)) == 3
        # A request without chunks (label lookups) is not limited by samples.
        assert len(await client.series(T0, T0 + 2 * H2, UP, skip_chunks=True)) == 3
        assert len(gw.store.blocks) == 2
    asyncio.run(_with_store(tmp_path, StoreLimitsConfig(request_samples=2400), body))


def test_min_and_max_time_serve_only_blocks_in_the_window(tmp_path: Path) -> None:
    def rfc3339(ms: int) -> str:
        import datetime
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")

    async def body(gw, client, ulids):
        info = await client.info()
        assert (info.min_time, info.max_time) == (T0, T0 + H2 - 1000)  # --max-time
        assert list(gw.store.blocks) == [ulids[0]]
        assert gw.registry.get_sample_value("thanos_blocks_meta_synced",
                                            {"state": "time-excluded"}) == 1
        got = await client.series(T0, T0 + 2 * H2, UP)
        assert all(c[1] < T0 + H2 for s in got for c in s.chunks) and len(got) == 3
        # A request wholly after the window touches no block.
        assert await client.series(T0 + H2, T0 + 2 * H2, UP) == []
    cfg = StoreLimitsConfig(min_time=rfc3339(T0 - H2), max_time=rfc3339(T0 + H2 - 1000))
    asyncio.run(_with_store(tmp_path, cfg, body))


# --------------------------------------------------------------------------- gate


def test_series_gate_lets_max_concurrency_calls_run_and_the_rest_wait() -> None:
    async def scenario() -> None:
        reg = CollectorRegistry()
        gate = SeriesGate(1, reg)
        release = asyncio.Event()
        entered: list[int] = []

        async def series(request, context):
            entered.append(request)
            await release.wait()
            yield b"frame"

        gated = gate.wrap(series)

        async def call(i: int) -> list[bytes]:
            return [f async for f in gated(i, None)]

        tasks = [asyncio.create_task(call(i)) for i in range(3)]
        for _ in range(20):
            await asyncio.sleep(0)
        assert entered == [0]  # one in, two waiting at the gate
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_in_flight") == 1
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*tasks), 10) == [[b"frame"]] * 3
        assert entered == [0, 1, 2]
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_total") == 3
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_in_flight") == 0
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_max") == 1
    asyncio.run(scenario())


def test_series_gate_slots_survive_cancelled_waiters_and_callers_that_stop_early() -> None:
    async def scenario() -> None:
        reg = CollectorRegistry()
        gate = SeriesGate(1, reg)
        release = asyncio.Event()
        closed: list[int] = []

        async def series(request, context):
            try:
                await release.wait()
                for _ in range(5):
                    yield b"f"
            finally:
                closed.append(request)

        gated = gate.wrap(series)
        first = asyncio.create_task(_drain(gated(0, None)))
        waiter = asyncio.create_task(_drain(gated(1, None)))
        for _ in range(20):
            await asyncio.sleep(0)
        waiter.cancel()  # a client gone while waiting at the gate
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()
        assert await asyncio.wait_for(first, 10) == [b"f"] * 5
        # A caller taking one frame and closing the stream frees its slot and ends the handler.
        it = gated(2, None)
        assert await it.__anext__() == b"f"
        await it.aclose()
        assert closed == [0, 2]
        assert await asyncio.wait_for(_drain(gated(3, None)), 10) == [b"f"] * 5
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_in_flight") == 0
        assert reg.get_sample_value(
            "thanos_bucket_store_series_gate_queries_duration_seconds_count") == 3
    asyncio.run(scenario())


def test_series_gate_of_zero_is_no_bound() -> None:
    async def scenario() -> None:
        gate = SeriesGate(0, CollectorRegistry())
        release = asyncio.Event()
        entered: list[int] = []

        async def series(request, context):
            entered.append(request)
            await release.wait()
            yield b"x"

        tasks = [asyncio.create_task(_drain(gate.wrap(series)(i, None))) for i in range(30)]
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(entered) == 30
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    asyncio.run(scenario())


def test_store_server_series_calls_pass_the_gate_without_a_wrapper() -> None:
    """StoreServer enters the gate itself: a second call waits while the first one's source
    is still reading, every call leaves (finished, failed or closed early by its caller), and
    the gate's counts are those of the wrapped handler."""
    from storeapi import rpc_pb2, types_pb2
    from storeapi.server import StoreServer

    release = asyncio.Event()
    started: list[int] = []

    class Source:
        def label_sets(self):
            return []

        async def series(self, mint, maxt, matchers, skip_chunks):
            started.append(mint)
            await release.wait()
            if mint == 13:
                raise ResourceExhausted("over the limit")
            return [((("__name__", "x"), ("i", str(k))), [(0, 10, b"\x00\x01\x00")])
                    for k in range(3)]

    class Context:
        async def abort(self, code, details=""):
            raise RuntimeError(code, details)

    async def scenario() -> None:
        reg = CollectorRegistry()
        gate = SeriesGate(1, reg)
        server = StoreServer(Source(), "store", series_gate=gate)

        def call(mint: int, batch: int = 0):
            req = rpc_pb2.SeriesRequest(min_time=mint, max_time=100, response_batch_size=batch,
                                        matchers=[types_pb2.LabelMatcher(name="__name__",
                                                                         value="x")])
            return server.series(req, Context())

        first = asyncio.create_task(_drain(call(1)))
        second = asyncio.create_task(_drain(call(2)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert started == [1]  # the second waits at the gate
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_in_flight") == 1
        release.set()
        assert [len(f) for f in await asyncio.wait_for(asyncio.gather(first, second), 10)] \
            == [3, 3]
        with pytest.raises(RuntimeError):  # a failed call leaves too
            await _drain(call(13))
        it = call(4, batch=1)  # a caller reading one frame, then closing the stream
        await it.__anext__()
        await it.aclose()
        assert started == [1, 2, 13, 4]
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_in_flight") == 0
        assert reg.get_sample_value("thanos_bucket_store_series_gate_queries_total") == 4
        assert reg.get_sample_value(
            "thanos_bucket_store_series_gate_queries_duration_seconds_count") == 4
    asyncio.run(scenario())


async def _drain(it) -> list[bytes]:
    return [f async for f in it]


# --------------------------------------------------------------------------- flags


BAD = [
    (["--store.limits.request-series", "-1"], "--store.limits.request-series"),
    (["--store.limits.request-samples", "1e6"], "--store.limits.request-samples"),
    (["--store.grpc.touched-series-limit", "many"], "--store.grpc.touched-series-limit"),
    (["--store.grpc.series-sample-limit", "-5"], "--store.grpc.series-sample-limit"),
    (["--store.grpc.series-max-concurrency", "-1"], "--store.grpc.series-max-concurrency"),
    (["--min-time", "yesterday"], "--min-time"),
    (["--max-time", "2024-13-01T00:00:00Z"], "--max-time"),
    (["--max-time", "2023-02-29T00:00:00Z"], "--max-time"),
    (["--min-time=-1d", "--max-time=-2d"], "can't be greater than --max-time"),
    (["--store.grpc.downloaded-bytes-limit=lots"], "--store.grpc.downloaded-bytes-limit"),
    (["--store.grpc.downloaded-bytes-limit=-1KB"], "--store.grpc.downloaded-bytes-limit"),
    (["--ignore-deletion-marks-delay=soon"], "--ignore-deletion-marks-delay"),
    (["--consistency-delay=-1h"], "--consistency-delay"),
]


@pytest.mark.parametrize("flags,named", BAD)
def test_bad_limit_flags_are_refused_naming_the_flag(flags, named):
    a = build_parser().parse_args(["store", "--objstore.config", "x", *flags])
    with pytest.raises(FlagError) as e:
        check_flags(a)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_a_bad_limit_flag_stops_the_start_with_one_line(capsys, tmp_path):
    conf = tmp_path / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    with pytest.raises(SystemExit) as e:
        main(["store", "--objstore.config-file", str(conf), "--data-dir",
              str(tmp_path / "data"), "--grpc-address", "127.0.0.1:0",
              "--http-address", "127.0.0.1:0", "--store.limits.request-series=-1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == ("promring store: invalid value '-1' for --store.limits.request-series: "
                   "must be a whole number, 0 or more (0: no limit)\n")
    assert not (tmp_path / "data").exists(), "nothing may start before the flags are checked"


def test_thanos_limit_flags_parse_to_the_store_config(tmp_path: Path) -> None:
    def cfg(*flags: str) -> StoreLimitsConfig:
        a = build_parser().parse_args(["store", "--objstore.config", "x", *flags])
        return store_config(a, str(tmp_path), "", "127.0.0.1:0", "").limits

    assert cfg() == StoreLimitsConfig()  # Thanos's defaults: no limits, 20 Series at once
    assert cfg("--store.limits.request-series=10", "--store.limits.request-samples=1200",
               "--store.grpc.series-max-concurrency=3", "--min-time=-2w",
               "--max-time=2030-01-01T00:00:00Z") == StoreLimitsConfig(10, 1200, 3, "-2w",
                                                                       "2030-01-01T00:00:00Z")
    # Thanos's Base2Bytes: KB and KiB are both 1024 bytes.
    assert cfg("--store.grpc.downloaded-bytes-limit=64KB").downloaded_bytes == 64 << 10
    assert cfg("--store.grpc.downloaded-bytes-limit=1GiB").downloaded_bytes == 1 << 30
    # The deprecated spellings still work, as in Thanos v0.42.
    assert cfg("--store.grpc.touched-series-limit=7", "--store.grpc.series-sample-limit=240"
               ) == StoreLimitsConfig(request_series=7, request_samples=240)


def test_block_sync_concurrency_flag_as_thanos(tmp_path: Path) -> None:
    """Thanos's `--block-sync-concurrency` (default 20) on `promring store` sets how many blocks
    a sync loads at once; a value under 1 is refused at start-up naming the flag."""
    def parse(*flags: str):
        return build_parser().parse_args(["store", "--objstore.config", "x", *flags])

    assert store_config(parse(), str(tmp_path), "", "127.0.0.1:0", "").block_sync_concurrency == 20
    assert store_config(parse("--block-sync-concurrency=3"), str(tmp_path), "", "127.0.0.1:0",
                        "").block_sync_concurrency == 3
    for bad in ("0", "-1", "x"):
        with pytest.raises(FlagError, match="--block-sync-concurrency"):
            check_flags(parse(f"--block-sync-concurrency={bad}"))
    check_flags(parse("--block-sync-concurrency=5"))
    # The bucket tools' flag of the same name is checked by the same start-up check.
    tools = build_parser().parse_args(["tools", "bucket", "retention", "--objstore.config", "x",
                                       "--block-sync-concurrency=0"])
    with pytest.raises(FlagError, match="--block-sync-concurrency"):
        check_flags(tools)


# --------------------------------------------------------------------------- tenants


def test_dropped_queries_carry_the_callers_thanos_tenant(tmp_path: Path) -> None:
    """As Thanos's store: the tenant label is the call's ``thanos-tenant`` gRPC metadata
    (``default-tenant`` without), for Series and for label calls."""
    from storeapi import rpc_pb2, types_pb2

    def dropped(gw, tenant: str) -> float | None:
        return gw.registry.get_sample_value("thanos_bucket_store_queries_dropped_total",
                                            {"reason": "series", "tenant": tenant})

    async def body(gw, client, ulids):
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{gw.ports['grpc']}")
        up = [types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__",
                                     value="up")]
        series = ch.unary_stream("/thanos.Store/Series",
                                 request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                                 response_deserializer=rpc_pb2.SeriesResponse.FromString)
        names = ch.unary_unary("/thanos.Store/LabelNames",
                               request_serializer=rpc_pb2.LabelNamesRequest.SerializeToString,
                               response_deserializer=rpc_pb2.LabelNamesResponse.FromString)
        try:
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as e:
                    async for _r in series(rpc_pb2.SeriesRequest(
                            min_time=T0, max_time=T0 + 2 * H2, matchers=up),
                            metadata=(("thanos-tenant", "team-a"),)):
                        pass
                assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.RpcError):
                await names(rpc_pb2.LabelNamesRequest(start=T0, end=T0 + 2 * H2, matchers=up),
                            metadata=(("thanos-tenant", "team-b"),))
            with pytest.raises(grpc.RpcError):
                await client.series(T0, T0 + 2 * H2, UP)  # no tenant
        finally:
            await ch.close()
        assert (dropped(gw, "team-a"), dropped(gw, "team-b"), dropped(gw, "default-tenant")) \
            == (2, 1, 1)
    asyncio.run(_with_store(tmp_path, StoreLimitsConfig(request_series=4), body))


def test_tenant_labels_of_dropped_queries_are_bounded() -> None:
    from store.limits import MAX_TENANT_LABELS, LimitMetrics
    reg = CollectorRegistry()
    m = LimitMetrics(reg)
    for i in range(MAX_TENANT_LABELS + 50):
        m.drop("series", f"t{i}")
    tenants = {s.labels["tenant"] for f in reg.collect() for s in f.samples
               if s.name == "thanos_bucket_store_queries_dropped_total"}
    assert len(tenants) == MAX_TENANT_LABELS + 1 and "other" in tenants
    assert reg.get_sample_value("thanos_bucket_store_queries_dropped_total",
                                {"reason": "series", "tenant": "other"}) == 51


# --------------------------------------------------------------------------- downloaded bytes


def test_downloaded_bytes_limit_refuses_at_each_read_step_as_thanos(tmp_path: Path) -> None:
    """--store.grpc.downloaded-bytes-limit: the bytes of postings, series entries and chunks a
    call will read are reserved before each read; over the limit the call fails with
    ResourceExhausted worded as Thanos's step (postings, series, chunks), counted once in
    dropped{reason="bytes"}. A call under it is served whole."""
    tail = ("rpc error: code = ResourceExhausted desc = exceeded bytes limit while fetching "
            "{what}: limit {lim} violated (got ")

    async def run_with(lim: int, body) -> None:
        (tmp_path / str(lim)).mkdir()
        await _with_store(tmp_path / str(lim), StoreLimitsConfig(downloaded_bytes=lim), body)

    async def postings(gw, client, ulids):  # 1 B: not even the postings list of one block
        with pytest.raises(grpc.RpcError) as e:
            await client.series(T0, T0 + 2 * H2, UP)
        msg = _exhausted(e.value)
        step = ("expanded matching posting: fetch and expand postings: get postings: "
                + tail.format(what="postings", lim=1))
        assert msg.startswith("fetch postings for block ") and msg.split()[4][:-1] in ulids
        assert step in msg
        with pytest.raises(grpc.RpcError) as e:
            await client.label_names(T0, T0 + 2 * H2, UP)
        assert _exhausted(e.value).startswith(step)  # label calls name no block here
        assert gw.registry.get_sample_value("thanos_bucket_store_queries_dropped_total",
                                            {"reason": "bytes", "tenant": "default-tenant"}) == 2

    async def series(gw, client, ulids):  # 100 B: postings fit, series entries do not
        with pytest.raises(grpc.RpcError) as e:
            await client.series(T0, T0 + H2 - 1, UP, skip_chunks=True)
        msg = _exhausted(e.value)
        assert msg.startswith(f"receive series from {ulids[0]}: preload series: " +
                              tail.format(what="series", lim=100))
        with pytest.raises(grpc.RpcError) as e:
            await client.label_values("instance", T0, T0 + H2 - 1, UP)
        assert _exhausted(e.value).startswith(f"iterate series for block {ulids[0]}: preload "
                                              "series: ")

    async def chunks(gw, client, ulids):  # 70 kB: one block's index reads (Thanos's estimate of
        # 64 KiB for a range of series entries) fit, its chunks (16000 B each range) not
        assert len(await client.series(T0, T0 + H2 - 1, UP, skip_chunks=True)) == 3
        with pytest.raises(grpc.RpcError) as e:
            await client.series(T0, T0 + H2 - 1, UP)
        assert _exhausted(e.value).startswith(f"receive series from {ulids[0]}: load chunks: " +
                                              tail.format(what="chunks", lim=70_000))

    async def enough(gw, client, ulids):
        got = await client.series(T0, T0 + 2 * H2, UP)
        assert len(got) == 3 and all(len(s.chunks) == 8 for s in got)
        assert gw.registry.get_sample_value("thanos_bucket_store_queries_dropped_total",
                                            {"reason": "bytes", "tenant": "default-tenant"}) == 0

    for lim, body in ((1, postings), (100, series), (70_000, chunks), (1 << 20, enough)):
        asyncio.run(run_with(lim, body))
