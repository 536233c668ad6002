"""The sidecar's parts that need no Prometheus: the streamed remote-read framing, matchers on
external labels, the SAMPLES fallback (for a Prometheus without streaming, not available
here), Thanos's block-duration check, --min-time, and the shipper's level filter and meta."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import cramjam
import numpy as np
import pytest
from aiohttp import web

from common.units import parse_time_or_duration
from common.varint import uvarint
from objstore.filesystem import FilesystemBucket
from receiver.tsdb import chunkenc
from receiver.tsdb.crc32c import crc32c
from receiver.tsdb.labels import Matcher, MatchType
from shipper.shipper import Shipper, ShipperOptions
from sidecar.chunked import FrameError, FrameReader
from sidecar.meta import PromMetadata
from sidecar.promclient import PrometheusClient, external_labels_of, selector
from sidecar.promstore import PrometheusStore, sample_chunks, split_external
from sidecar.server import check_block_durations
from storeapi import prompb_pb2, remote_pb2
from storeapi.server import InvalidRequest


def frame(data: bytes) -> bytes:
    return uvarint(len(data)) + crc32c(data).to_bytes(4, "big") + data


@pytest.mark.parametrize("piece", [1, 3, 64, 1 << 20])
def test_frames_come_out_whole_whatever_the_pieces(piece):
    frames = [b"x" * 300, b"", b"abc", bytes(range(256)) * 10]
    body = b"".join(frame(f) for f in frames)
    r, out = FrameReader(), []
    for i in range(0, len(body), piece):
        out += r.feed(body[i:i + piece])
    r.finish()
    assert out == frames


def test_bad_frames_are_errors_not_buffers():
    with pytest.raises(FrameError, match="checksum"):
        FrameReader().feed(frame(b"abc")[:-1] + b"x")
    with pytest.raises(FrameError, match="limit"):
        FrameReader(limit=10).feed(uvarint(11))  # refused before 11 bytes are buffered
    with pytest.raises(FrameError, match="overflows"):
        FrameReader().feed(b"\xff" * 11)
    r = FrameReader()
    r.feed(frame(b"abcdef")[:-2])
    with pytest.raises(FrameError, match="ended inside a frame"):
        r.finish()


def test_matchers_on_external_labels_are_decided_locally():
    ext = (("cluster", "eu"), ("replica", "0"))
    name = Matcher(MatchType.EQ, "__name__", "up")
    assert split_external([name, Matcher(MatchType.EQ, "cluster", "eu")], ext) == (True, [name])
    assert split_external([name, Matcher(MatchType.RE, "cluster", "us|ap")], ext) == (False, [])
    assert split_external([name, Matcher(MatchType.NEQ, "replica", "1")], ext) == (True, [name])
    assert split_external([name], ()) == (True, [name])

    meta = PromMetadata(lambda: 0, labels=ext)
    store = PrometheusStore(PrometheusClient("http://127.0.0.1:1"), meta)
    with pytest.raises(InvalidRequest, match="no matchers specified"):
        asyncio.run(store.series(0, 1, [Matcher(MatchType.EQ, "cluster", "eu")], False))
    # Not matching the external labels: empty, and Prometheus (unreachable here) not asked.
    assert asyncio.run(store.series(0, 1, [name, Matcher(MatchType.EQ, "cluster", "x")],
                                    False)) == []


def test_selector_and_external_labels_parsing():
    assert selector([Matcher(MatchType.EQ, "a", 'x"y\\'), Matcher(MatchType.NRE, "b", "c.*")]) \
        == '{a="x\\"y\\\\",b!~"c.*"}'
    yml = "global:\n  external_labels:\n    replica: 1\n    cluster: eu\nscrape_configs: []\n"
    assert external_labels_of(yml) == (("cluster", "eu"), ("replica", "1"))
    assert external_labels_of("global: {}\n") == ()


def test_samples_answer_is_cut_into_xor_chunks_of_120():
    ts = prompb_pb2.TimeSeries(samples=[prompb_pb2.Sample(timestamp=1000 * i, value=i * 0.5)
                                        for i in range(250)])
    chunks = sample_chunks(ts.samples)
    assert [(c[0], c[1]) for c in chunks] == [(0, 119000), (120000, 239000), (240000, 249000)]
    t, v = chunkenc.decode_many([c[2] for c in chunks], 0, 1 << 62)
    assert np.array_equal(t, np.arange(250) * 1000) and np.array_equal(v, np.arange(250) * 0.5)


def test_a_prometheus_without_streaming_is_read_through_samples():
    """An old Prometheus answers a snappy ReadResponse whatever was asked; the series come out
    with external labels winning over Prometheus's own and in label order."""
    got_requests: list[remote_pb2.ReadRequest] = []
    noise = np.random.default_rng(1).random(60_000)  # a body of ~1 MB: many reads

    async def read(request: web.Request) -> web.Response:
        got_requests.append(remote_pb2.ReadRequest.FromString(
            bytes(cramjam.snappy.decompress_raw(await request.read()))))
        lbl = prompb_pb2.TimeSeries
        resp = remote_pb2.ReadResponse(results=[remote_pb2.QueryResult(timeseries=[
            lbl(labels=[{"name": "__name__", "value": "up"}, {"name": "zone", "value": "b"},
                        {"name": "cluster", "value": "own"}],
                samples=[prompb_pb2.Sample(timestamp=5, value=1.0)]),
            lbl(labels=[{"name": "__name__", "value": "up"}, {"name": "zone", "value": "a"}],
                samples=[prompb_pb2.Sample(timestamp=6, value=2.0)]),
            lbl(labels=[{"name": "__name__", "value": "up"}, {"name": "zone", "value": "c"}]),
            lbl(labels=[{"name": "__name__", "value": "up"}, {"name": "zone", "value": "d"}],
                samples=[prompb_pb2.Sample(timestamp=t, value=v) for t, v in enumerate(noise)]),
        ])])
        return web.Response(body=bytes(cramjam.snappy.compress_raw(resp.SerializeToString())),
                            content_type="application/x-protobuf")

    async def run():
        app = web.Application()
        app.router.add_post("/api/v1/read", read)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = PrometheusClient(f"http://127.0.0.1:{port}")
        meta = PromMetadata(lambda: 0, labels=(("cluster", "eu"),), mint=3)
        try:
            return await PrometheusStore(client, meta).series(
                0, 100, [Matcher(MatchType.EQ, "__name__", "up")], False)
        finally:
            await client.close()
            await runner.cleanup()

    out = asyncio.run(run())
    assert [s[0] for s in out] == [
        (("__name__", "up"), ("cluster", "eu"), ("zone", "a")),
        (("__name__", "up"), ("cluster", "eu"), ("zone", "b")),
        (("__name__", "up"), ("cluster", "eu"), ("zone", "d"))]
    t, v = chunkenc.decode_many([c[2] for c in out[2][1]], 0, 1 << 62)
    assert len(out[2][1]) == 500 and np.array_equal(v, noise) and t[-1] == 59_999
    q = got_requests[0].queries[0]
    assert (q.start_timestamp_ms, q.end_timestamp_ms) == (3, 100)  # not before Prometheus's data
    assert list(got_requests[0].accepted_response_types) == [
        remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS, remote_pb2.ReadRequest.SAMPLES]


def test_block_durations_must_be_equal_as_thanos_requires():
    flags = {"storage.tsdb.min-block-duration": "2h", "storage.tsdb.max-block-duration": "1d"}
    assert "Compaction needs to be disabled" in check_block_durations(flags, False)
    assert check_block_durations(flags, True) is None
    flags["storage.tsdb.max-block-duration"] = "2h"
    assert check_block_durations(flags, False) is None
    assert check_block_durations(None, False) is None  # no flags API: not checked


def test_min_time_flag():
    assert parse_time_or_duration("0000-01-01T00:00:00Z")() == -62167219200000  # as Go's
    assert parse_time_or_duration("2020-01-01T00:00:00.5+01:00")() == 1577833200500
    now = parse_time_or_duration("0s")()
    assert now - 86_400_000 - 1000 <= parse_time_or_duration("-1d")() <= now - 86_400_000 + 1000
    with pytest.raises(ValueError):
        parse_time_or_duration("yesterday")


def _block(root: Path, ulid: str, level: int, samples: int = 10) -> None:
    d = root / ulid
    (d / "chunks").mkdir(parents=True)
    (d / "chunks" / "000001").write_bytes(b"c" * 10)
    (d / "index").write_bytes(b"i" * 10)
    (d / "meta.json").write_text(json.dumps({
        "ulid": ulid, "minTime": 0, "maxTime": 1, "version": 1,
        "stats": {"numSamples": samples}, "compaction": {"level": level, "sources": [ulid]}}))


@pytest.mark.parametrize("upload_compacted", [False, True])
def test_shipper_level_filter_and_meta_transform(tmp_path, upload_compacted):
    local = tmp_path / "tsdb"
    _block(local, "01AAAAAAAAAAAAAAAAAAAAAAAA", 1)
    _block(local, "01BBBBBBBBBBBBBBBBBBBBBBBB", 2)
    _block(local, "01CCCCCCCCCCCCCCCCCCCCCCCC", 1, samples=0)
    bucket = FilesystemBucket(tmp_path / "bucket")

    def add_thanos(meta: dict) -> dict:
        return {**meta, "thanos": {"labels": {"cluster": "eu"}, "source": "sidecar"}}

    opts = ShipperOptions(meta_transform=add_thanos, upload_compacted=upload_compacted,
                          skip_empty=True)
    assert asyncio.run(Shipper(bucket, local, opts=opts).sync()) == (2 if upload_compacted else 1)
    shipped = sorted(p.name for p in (tmp_path / "bucket").iterdir())
    assert shipped == (["01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB"]
                       if upload_compacted else ["01AAAAAAAAAAAAAAAAAAAAAAAA"])
    meta = json.loads((tmp_path / "bucket" / shipped[0] / "meta.json").read_text())
    assert meta["thanos"] == {"labels": {"cluster": "eu"}, "source": "sidecar"}
    assert "thanos" not in json.loads((local / shipped[0] / "meta.json").read_text())
    # A new Shipper (a restart) ships nothing again.
    assert asyncio.run(Shipper(bucket, local, opts=opts).sync()) == 0


def test_frame_decoder_in_c_agrees_with_protobuf_and_refuses_garbage():
    from storeapi._wire import chunked_read_series
    series = [prompb_pb2.ChunkedSeries(
        labels=[{"name": "__name__", "value": "up"}, {"name": "é", "value": ""}],
        chunks=[prompb_pb2.Chunk(min_time_ms=-5, max_time_ms=1 << 40, type=1, data=b"xor"),
                prompb_pb2.Chunk(min_time_ms=7, max_time_ms=9, type=2, data=b"hist")]),
        prompb_pb2.ChunkedSeries(labels=[{"name": "a", "value": "b"}])]
    frame = remote_pb2.ChunkedReadResponse(chunked_series=series, query_index=1)
    assert chunked_read_series(frame.SerializeToString()) == [
        ((("__name__", "up"), ("é", "")),
         [(-5, 1 << 40, b"xor"), (7, 9, b"hist", 2)], True),
        ((("a", "b"),), [], False)]
    good = frame.SerializeToString()
    for cut in range(1, len(good)):
        try:
            chunked_read_series(good[:cut])  # a prefix may happen to be valid protobuf
        except ValueError:
            pass
    for garbage in (b"\x0a\xff\xff\xff\xff\x0f", b"\x0b", b"\x0a\x02\x0a\x80", b"\xff" * 12):
        with pytest.raises(ValueError):
            chunked_read_series(garbage)


def test_envsubst_as_thanos_reloader(monkeypatch):
    from sidecar.reloader import expand_env
    monkeypatch.setenv("SC_A", "x")
    assert expand_env(b"a: $(SC_A) $SC_A ${SC_A} $(SC_A)$(SC_A)") == b"a: x $SC_A ${SC_A} xx"
    monkeypatch.delenv("SC_UNSET", raising=False)
    with pytest.raises(ValueError, match="SC_UNSET"):
        expand_env(b"$(SC_UNSET)")


def test_external_labels_win_over_the_series_own():
    from sidecar.promstore import with_external
    ext = (("cluster", "eu"),)
    assert with_external((("a", "1"), ("cluster", "eu")), ext) == (("a", "1"), ("cluster", "eu"))
    assert with_external((("a", "1"), ("cluster", "own")), ext) == (("a", "1"), ("cluster", "eu"))
    assert with_external((("z", "1"),), ext) == (("cluster", "eu"), ("z", "1"))
    assert with_external({"z": "1"}, ext) == (("cluster", "eu"), ("z", "1"))
