"""Native histograms after the ingestor: bucket blocks through the store gateway, and the
compactor (plain merges, vertical merges, offline dedup, downsampling passes)."""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np

from compactor import CompactConfig, Compactor
from compactor.merge import merge_blocks
from objstore import FilesystemBucket
from receiver.multitsdb import TenantTSDB, TSDBOptions
from receiver.remotewrite import decode, encode_histogram_write_request, encode_write_request
from receiver.tsdb.aggr import ENCODING_AGGR, RES_5M
from receiver.tsdb.block import BlockMeta, BlockReader, read_meta
from receiver.tsdb.chunkenc import ENCODING_XOR
from receiver.tsdb.chunkenc import decode as xor_decode
from receiver.tsdb.head import HeadOptions
from receiver.tsdb.histogram import (ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, HINT_RESET,
                                     EncodedChunk, Hist, decode_chunk, to_proto_bytes)
from receiver.tsdb.labels import Labels, Matcher, MatchType
from store.server import StoreConfig, StoreGateway
from storeapi.client import StoreClient

H = 3_600_000
ALL = (-(1 << 62), 1 << 62)
HIST_ENCS = (ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM)


def _deltas(xs: list[int]) -> list[int]:
    return [x - (xs[k - 1] if k else 0) for k, x in enumerate(xs)]


def ih(i: int, shift: int = 0) -> Hist:
    """An integer counter histogram growing with ``i`` (deltas, as remote write sends)."""
    p = [1 + i, 2 * i + shift, 3 + i, i // 2]
    n = [i, 1]
    zc = i // 3
    return Hist(False, 0, 2.0 ** -128, sum(p) + sum(n) + zc, zc, 1.25 * i + 0.5,
                ((-1, 2), (1, 2)), _deltas(p), ((0, 2),), _deltas(n))


def fh(i: int) -> Hist:
    p = [0.5 * i, 1.5 * i + 1, 0.25]
    return Hist(True, 1, 0.001, sum(p) + 0.5, 0.5, 3.5 * i, ((0, 3),), p, (), [])


def hkey(h: Hist) -> tuple:
    """A histogram sample's value, without the counter-reset hint (chunk metadata)."""
    return (h.is_float, h.schema, h.zt, h.count, h.zc, h.sum, h.pspans, list(h.pbuckets),
            h.nspans, list(h.nbuckets), h.cv)


# ------------------------------------------------------------------ ingestor path

def ingest(path: Path, hists: dict[Labels, list[tuple[int, Hist]]],
           floats: dict[Labels, tuple[np.ndarray, np.ndarray]], *, ext: Labels = (),
           step_ms: int = 2 * H) -> list[Path]:
    """Write samples through a tenant TSDB (remote-write decode, head, WAL) in ``step_ms``
    slices, cutting blocks as the ingestor does, then flush; the block directories."""
    db = TenantTSDB("t", TSDBOptions(path=path, external_labels=ext,
                                     head=HeadOptions(chunk_range_ms=2 * H)))
    all_t = [t for s in hists.values() for t, _ in s] + \
        [int(t) for ts, _ in floats.values() for t in ts[:1].tolist() + ts[-1:].tolist()]
    lo, hi = min(all_t), max(all_t) + 1
    for a in range(lo, hi, step_ms):
        b = a + step_ms
        hs = [(k, [to_proto_bytes(t, h) for t, h in s if a <= t < b]) for k, s in hists.items()]
        fs = [(k, ts[(ts >= a) & (ts < b)], vs[(ts >= a) & (ts < b)])
              for k, (ts, vs) in floats.items()]
        req = encode_histogram_write_request(x for x in hs if x[1])
        req += encode_write_request(x for x in fs if len(x[1]))
        out = db.write(decode(req))
        assert out.conflicts == []
        db.compact()
    db.flush()
    dirs = [db.dir / u for u in sorted(db.blocks)]
    db.close()
    return dirs


def block_samples(dirs: list[Path]) -> tuple[dict, dict]:
    """(histograms, floats) per series over raw blocks: {labels: {t: value key}}; asserts no
    timestamp is held twice."""
    hs: dict[Labels, dict[int, tuple]] = {}
    fs: dict[Labels, dict[int, float]] = {}
    for d in dirs:
        with BlockReader(d) as r:
            for lbls, chunks in r.iter_series():
                for _, _, enc, data in chunks:
                    if enc in HIST_ENCS:
                        for t, h in decode_chunk(data, enc):
                            assert t not in hs.setdefault(lbls, {})
                            hs[lbls][t] = hkey(h)
                    else:
                        assert enc == ENCODING_XOR
                        ts, vs = xor_decode(data)
                        for t, v in zip(ts.tolist(), vs.tolist()):
                            assert t not in fs.setdefault(lbls, {})
                            fs[lbls][t] = v
    return hs, fs


def lb(name: str, **kw: str) -> Labels:
    return tuple(sorted({"__name__": name, **kw}.items()))


# ------------------------------------------------------------------ store gateway

def test_store_gateway_serves_histogram_chunks_from_bucket_blocks(tmp_path: Path) -> None:
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % (2 * H)
    hi_ = {lb("req_hist", job="a"): [(t0 + i * 30_000, ih(i)) for i in range(600)],  # 5h
           lb("req_fhist", job="a"): [(t0 + i * 60_000, fh(i)) for i in range(200)]}
    ts = t0 + np.arange(300, dtype=np.int64) * 60_000
    fl = {lb("plain", job="a"): (ts, np.arange(300, dtype=np.float64))}
    dirs = ingest(tmp_path / "ing", hi_, fl, ext=(("replica", "r1"),))
    assert len(dirs) >= 3
    metas = [read_meta(d) for d in dirs]
    assert sum(m.num_histogram_samples for m in metas) == 800
    assert sum(m.num_float_samples for m in metas) == 300
    assert all(m.num_samples == m.num_histogram_samples + m.num_float_samples for m in metas)
    stats = metas[0].to_dict()["stats"]
    assert list(stats)[:3] == ["numSamples", "numFloatSamples", "numHistogramSamples"]

    bdir = tmp_path / "bucket"
    for d in dirs:
        shutil.copytree(d, bdir / d.name)

    async def main() -> None:
        gw = StoreGateway(StoreConfig(data_dir=tmp_path / "sd", objstore_config="",
                                      grpc_address="127.0.0.1:0", http_address="127.0.0.1:0",
                                      sync_interval_s=3600),
                          bucket=FilesystemBucket(str(bdir)))
        await gw.start()
        client = StoreClient(f"127.0.0.1:{gw.ports['grpc']}", timeout_s=60,
                             native_histograms=True)
        try:
            got = await client.series(*ALL, [Matcher(MatchType.EQ, "job", "a")])
            assert [s.labels for s in got] == sorted(
                tuple(sorted(dict(k, replica="r1", tenant_id="t").items()))
                for k in list(hi_) + list(fl))
            for s in got:
                name = dict(s.labels)["__name__"]
                if name == "plain":
                    assert not any(isinstance(c[2], EncodedChunk) for c in s.chunks)
                    t = np.concatenate([xor_decode(c[2])[0] for c in s.chunks])
                    assert t.tolist() == ts.tolist()
                    continue
                want_enc = ENCODING_HISTOGRAM if name == "req_hist" else ENCODING_FLOAT_HISTOGRAM
                assert {c[2].encoding for c in s.chunks} == {want_enc}
                back = [(t, hkey(h)) for c in s.chunks for t, h in decode_chunk(c[2])]
                src = hi_[lb(name, job="a")]
                assert back == [(t, hkey(h)) for t, h in src]
                assert all(c[0] <= c[1] for c in s.chunks)
            # a narrow range still gets exactly the chunks covering it
            mid = t0 + 3 * H
            (part,) = await client.series(mid, mid + 60_000,
                                          [Matcher(MatchType.EQ, "__name__", "req_hist")])
            ts_part = [t for c in part.chunks for t, _ in decode_chunk(c[2])]
            assert any(mid <= t <= mid + 60_000 for t in ts_part)
            assert all(c[1] >= mid and c[0] <= mid + 60_000 for c in part.chunks)
            # without native histograms the client drops them (and keeps the floats)
            plain = StoreClient(f"127.0.0.1:{gw.ports['grpc']}", timeout_s=60)
            try:
                res = await plain.series(*ALL, [Matcher(MatchType.EQ, "job", "a")])
                assert [dict(s.labels)["__name__"] for s in res if s.chunks] == ["plain"]
            finally:
                await plain.close()
            assert gw.store.fetch_metrics.skipped_chunks._value.get() == 0
        finally:
            await client.close()
            await gw.stop()

    asyncio.run(main())


# ------------------------------------------------------------------ compactor merges

def test_overlapping_histogram_blocks_merge_vertically(tmp_path: Path) -> None:
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % (2 * H)
    name = lb("h")
    a = [(t0 + i * 30_000, ih(i)) for i in range(0, 200, 2)]  # even steps
    b = [(t0 + i * 30_000, ih(i, shift=1 if i % 4 == 0 else 0)) for i in range(0, 200, 4)]
    b += [(t0 + i * 30_000, ih(i)) for i in range(201, 230, 2)]  # b runs longer
    b.sort(key=lambda s: s[0])
    fa = {lb("f"): (np.array([t0, t0 + 60_000]), np.array([1.0, 2.0]))}
    fb = {lb("f"): (np.array([t0 + 60_000, t0 + 120_000]), np.array([9.0, 3.0]))}
    (da,) = ingest(tmp_path / "a", {name: a, lb("only_a"): [(t0, fh(1))]}, fa)
    (db,) = ingest(tmp_path / "b", {name: b}, fb)
    metas = sorted([read_meta(da), read_meta(db)], key=lambda m: (m.min_time, m.ulid))
    dirs = [da if m.ulid == da.name else db for m in metas]
    first = dict(a) if dirs[0] == da else dict(b)
    second = dict(b) if dirs[0] == da else dict(a)
    meta, stats = merge_blocks(dirs, tmp_path / "out", vertical=True, resolution=0,
                               thanos_labels={"x": "y"}, metas=metas)
    hs, fs = block_samples([tmp_path / "out" / meta.ulid])
    # Both blocks hold every 4th step of "h" with other bucket counts, and "f" at t0 + 60s.
    assert stats["conflicting_samples"] == len(range(0, 200, 4)) + 1
    want = {**{t: hkey(h) for t, h in second.items()}, **{t: hkey(h) for t, h in first.items()}}
    assert hs[name] == dict(sorted(want.items()))
    assert list(hs[name]) == sorted(want)
    assert hs[lb("only_a")] == {t0: hkey(fh(1))}
    assert fs[lb("f")][t0 + 120_000] == 3.0 and len(fs[lb("f")]) == 3
    assert meta.num_histogram_samples == len(want) + 1
    assert meta.num_float_samples == 3
    assert meta.num_samples == meta.num_histogram_samples + meta.num_float_samples
    # a counter histogram's chunks: no spurious reset where the blocks' samples interleave
    with BlockReader(tmp_path / "out" / meta.ulid) as r:
        (_, chunks), = [s for s in r.iter_series() if s[0] == name]
        hints = [h.hint for _, _, enc, d in chunks for _, h in decode_chunk(d, enc)]
        assert hints.count(HINT_RESET) == 0

    # non-overlapping: chunks are copied byte for byte with their encodings
    with BlockReader(da) as r:
        src = {lbls: [(x, y, e, bytes(d)) for x, y, e, d in cs] for lbls, cs in r.iter_series()}
    m2, _ = merge_blocks([da], tmp_path / "copy", vertical=False, resolution=0,
                         thanos_labels={}, metas=[read_meta(da)])
    with BlockReader(tmp_path / "copy" / m2.ulid) as r:
        assert {lbls: [(x, y, e, bytes(d)) for x, y, e, d in cs]
                for lbls, cs in r.iter_series()} == src
    assert m2.num_histogram_samples == read_meta(da).num_histogram_samples


def _cfg(tmp: Path, **kw) -> CompactConfig:
    base = dict(data_dir=tmp / "work", objstore_config="", consistency_delay_s=0,
                delete_delay_s=0, partial_upload_age_s=0)
    base.update(kw)
    return CompactConfig(**base)


def _pass(tmp: Path, bdir: Path, **kw):
    async def go():
        c = Compactor(_cfg(tmp, **kw), bucket=FilesystemBucket(str(bdir)))
        return c, await c.run_once()
    return asyncio.run(go())


def _live(bdir: Path, res: int = 0) -> list[BlockMeta]:
    out = []
    for p in sorted(bdir.iterdir()):
        if (p / "meta.json").exists() and not (p / "deletion-mark.json").exists():
            m = read_meta(p)
            if int(m.thanos["downsample"]["resolution"]) == res:
                out.append(m)
    return out


def _t_aligned() -> int:
    now = int(time.time() * 1000)
    return (now // (48 * H)) * 48 * H - 6 * 24 * H


def test_offline_dedup_of_histogram_replicas(tmp_path: Path) -> None:
    t0 = _t_aligned()
    name = lb("h", job="j")
    full = [(t0 + i * 60_000, ih(i)) for i in range(8 * 60)]  # 8h
    rng = np.random.default_rng(7)
    union: dict[int, tuple] = {}
    bdir = tmp_path / "bucket"
    for rep in ("a", "b", "c"):
        keep = rng.random(len(full)) > 0.3
        sel = [s for s, k in zip(full, keep) if k]
        union.update((t, hkey(h)) for t, h in sel)
        for d in ingest(tmp_path / f"ing-{rep}", {name: sel}, {}, ext=(("replica", rep),)):
            shutil.copytree(d, bdir / d.name)
    # a later block keeps the last range complete for the planner
    for d in ingest(tmp_path / "later", {name: [(t0 + 8 * H + 1, ih(900))]}, {},
                    ext=(("replica", "a"),)):
        shutil.copytree(d, bdir / d.name)
    c, res = _pass(tmp_path, bdir, dedup_replica_labels=["replica"])
    assert not res.halted and c.metrics.vertical._value.get() >= 1
    live = _live(bdir)
    assert any("replica" not in m.thanos["labels"] for m in live)
    hs, _ = block_samples([bdir / m.ulid for m in live])
    got = {t: v for t, v in hs[name].items() if t < t0 + 8 * H}
    assert got == dict(sorted(union.items()))


def test_full_pass_with_histograms_compacts_and_downsamples(tmp_path: Path) -> None:
    t0 = _t_aligned()
    span = 50 * H
    hists = {lb("lat", job="j"): [(t0 + i * 300_000, ih(i % 50)) for i in range(span // 300_000)],
             lb("flat", job="j"): [(t0 + i * 600_000, fh(i)) for i in range(span // 600_000)]}
    ts = np.arange(t0, t0 + span, 60_000, dtype=np.int64)
    floats = {lb("cpu", job="j"): (ts, np.sin(np.arange(len(ts)) / 10.0) + 2.0),
              lb("reqs", job="j"): (ts, np.cumsum(np.ones(len(ts))))}
    bdir = tmp_path / "bucket"
    for d in ingest(tmp_path / "ing", hists, floats):
        shutil.copytree(d, bdir / d.name)
    before = block_samples([bdir / m.ulid for m in _live(bdir)])
    n_hist = sum(len(v) for v in before[0].values())
    assert n_hist == sum(len(s) for s in hists.values())

    c, res = _pass(tmp_path, bdir)
    assert not res.halted and c.metrics.halted._value.get() == 0
    assert res.compactions >= 1 and res.downsamples >= 1
    raw = _live(bdir)
    assert any(m.max_time - m.min_time == 48 * H for m in raw)
    assert block_samples([bdir / m.ulid for m in raw]) == before
    assert sum(m.num_histogram_samples for m in raw) == n_hist
    ds = _live(bdir, RES_5M)
    assert ds
    for m in ds:
        with BlockReader(bdir / m.ulid) as r:
            got = {lbls: {e for *_, e, _ in cs} for lbls, cs in r.iter_series()}
        # histogram series stay raw-only; the float series are downsampled
        assert set(got) == set(floats) and all(v == {ENCODING_AGGR} for v in got.values())
        assert m.num_histogram_samples == 0
    assert c.metrics.samples.labels("histograms-not-downsampled")._value.get() > 0
    # a second pass has nothing left to do, and nothing halts
    _, res2 = _pass(tmp_path, bdir)
    assert not res2.halted and res2.compactions == 0 and res2.downsamples == 0
    assert block_samples([bdir / m.ulid for m in _live(bdir)]) == before
