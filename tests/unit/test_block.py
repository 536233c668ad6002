"""Block writer/reader: checked against Prometheus's own tools (promtool) both ways."""
from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from receiver.tsdb.block import (
    BlockReader,
    CorruptionError,
    cut_chunks,
    new_ulid,
    read_meta,
    ulid_time,
    write_block,
    write_block_from_samples,
)
from receiver.tsdb.chunkenc import decode, decode_many
from receiver.tsdb.chunks import ChunkReader
from receiver.tsdb.crc32c import crc32c
from receiver.tsdb.index import IndexReader
from receiver.tsdb.labels import STALE_NAN_BITS, Labels, Matcher, matches_all

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Prometheus) not installed")
STALE_NAN = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]

Series = list[tuple[Labels, np.ndarray, np.ndarray]]


def make_series(n_series: int, n_samples: int, t0: int = 1_000_000, seed: int = 1) -> Series:
    """Sorted series over several label names, irregular timestamps, NaN/stale NaN/Inf values."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_series):
        lbls: dict[str, str] = {"__name__": f"metric_{i % 7}", "job": f"job{i % 3}",
                                "instance": f"host-{i}"}
        if i % 5 == 0:
            lbls["env"] = "prod" if i % 10 == 0 else "dev"
        ts = t0 + np.cumsum(rng.integers(1, 30_000, n_samples)).astype(np.int64)
        vals = np.round(rng.normal(100, 20, n_samples), 2)
        if i % 4 == 0:
            vals = np.cumsum(rng.integers(0, 5, n_samples)).astype(np.float64)
        vals[rng.integers(0, n_samples, 3)] = np.nan
        vals[rng.integers(0, n_samples, 2)] = STALE_NAN
        vals[rng.integers(0, n_samples, 1)] = np.inf
        out.append((tuple(sorted(lbls.items())), ts, vals))
    out.sort(key=lambda s: s[0])
    return out


def prom_labels(lbls: Labels) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in lbls) + "}"


def parse_dump(text: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for line in text.splitlines():
        lbls, v, t = line.rsplit(" ", 2)
        ts, vs = out.setdefault(lbls, ([], []))
        ts.append(int(t))
        vs.append(float(v))
    return out


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal, NaN matching NaN (promtool prints every NaN as "NaN")."""
    return bool(np.array_equal(a, b, equal_nan=True))


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=300)


def all_matchers(series: list[Labels]) -> list[list[Matcher]]:
    return [
        [Matcher("=", "job", "job1")],
        [Matcher("!=", "job", "job1")],
        [Matcher("=~", "instance", "host-1.*")],
        [Matcher("!~", "instance", "host-1.*")],
        [Matcher("=", "env", "")],                       # absent label matches ""
        [Matcher("!=", "env", "")],
        [Matcher("=~", "env", "prod|")],
        [Matcher("!~", "env", "dev")],
        [Matcher("=", "nosuch", "")],
        [Matcher("=", "nosuch", "x")],
        [Matcher("=", "__name__", "metric_2"), Matcher("=~", "job", "job[02]")],
        [Matcher("=~", "__name__", ".+"), Matcher("!=", "instance", "host-3")],
    ]


# --------------------------------------------------------------------------- our block → promtool


@needs_promtool
def test_promtool_reads_our_block(tmp_path: Path) -> None:
    series = make_series(2000, 250)
    mint, maxt = 0, 7_200_000 * 4
    (tmp_path / "wal").mkdir()  # `promtool tsdb dump` opens the dir as a TSDB and wants a WAL
    meta = write_block_from_samples(tmp_path, series, mint, maxt)
    assert not list(tmp_path.glob("*.tmp"))
    total = sum(len(ts) for _, ts, _ in series)
    n_chunks = sum(math.ceil(len(ts) / 120) for _, ts, _ in series)
    assert (meta.num_samples, meta.num_series, meta.num_chunks) == (total, 2000, n_chunks)

    listed = promtool("tsdb", "list", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(meta.ulid))
    assert row[1:3] == [str(mint), str(maxt)]
    assert row[-4:-1] == [str(total), str(n_chunks), "2000"]

    analyzed = promtool("tsdb", "analyze", str(tmp_path), meta.ulid)
    assert analyzed.returncode == 0, analyzed.stderr
    assert "Series: 2000" in analyzed.stdout

    dumped = promtool("tsdb", "dump", str(tmp_path))
    assert dumped.returncode == 0, dumped.stderr
    got = parse_dump(dumped.stdout)
    assert len(got) == len(series)
    for lbls, ts, vals in series:
        gts, gvs = got[prom_labels(lbls)]
        assert np.array_equal(np.array(gts), ts)
        assert same_values(np.array(gvs), vals)


@needs_promtool
def test_promtool_reads_multi_segment_block_with_thanos_meta(tmp_path: Path) -> None:
    series = make_series(300, 400, seed=7)
    (tmp_path / "wal").mkdir()
    chunks = [(lbls, cut_chunks(ts, vals, 0, 10**9)) for lbls, ts, vals in series]
    meta = write_block(tmp_path, chunks, 0, 10**9, segment_size=16 * 1024,
                       thanos_meta={"labels": {"replica": "a"}, "source": "receive"})
    segs = sorted(p.name for p in (tmp_path / meta.ulid / "chunks").iterdir())
    assert len(segs) > 5 and segs[0] == "000001"
    assert all((tmp_path / meta.ulid / "chunks" / s).stat().st_size <= 16 * 1024 for s in segs)
    dumped = promtool("tsdb", "dump", str(tmp_path))
    assert dumped.returncode == 0, dumped.stderr
    got = parse_dump(dumped.stdout)
    for lbls, ts, vals in series:
        gts, gvs = got[prom_labels(lbls)]
        assert np.array_equal(np.array(gts), ts) and same_values(np.array(gvs), vals)

    raw = json.loads((tmp_path / meta.ulid / "meta.json").read_text())
    assert raw["version"] == 1 and raw["compaction"] == {"level": 1, "sources": [meta.ulid]}
    th = raw["thanos"]
    assert th["labels"] == {"replica": "a"} and th["source"] == "receive"
    assert th["downsample"] == {"resolution": 0} and th["version"] == 1
    files = {f["rel_path"]: f.get("size_bytes") for f in th["files"]}
    assert files["index"] == (tmp_path / meta.ulid / "index").stat().st_size
    assert files["chunks/000001"] == (tmp_path / meta.ulid / "chunks/000001").stat().st_size
    assert "meta.json" in files and len(files) == len(segs) + 2


def test_thanos_section_describes_this_blocks_files_only(tmp_path: Path) -> None:
    """Thanos's shipper and compactor write ``segment_files`` (its store gateway then skips
    listing chunks/), so we do too; file facts copied in from another block's meta (a
    downsampled block starts from its source's thanos section: files, segment_files,
    index_stats, upload_time) are replaced or dropped, never carried over."""
    series = make_series(50, 400, seed=3)
    chunks = [(lbls, cut_chunks(ts, vals, 0, 10**9)) for lbls, ts, vals in series]
    stale = {"labels": {"a": "b"}, "source": "compactor",
             "files": [{"rel_path": "chunks/000009", "size_bytes": 1}],
             "segment_files": ["000009"], "upload_time": "2020-01-01T00:00:00Z",
             "index_stats": {"series_max_size": 1, "chunk_max_size": 2}}
    meta = write_block(tmp_path, chunks, 0, 10**9, segment_size=16 * 1024, thanos_meta=stale)
    th = json.loads((tmp_path / meta.ulid / "meta.json").read_text())["thanos"]
    segs = sorted(p.name for p in (tmp_path / meta.ulid / "chunks").iterdir())
    assert len(segs) > 1 and th["segment_files"] == segs
    assert [f["rel_path"] for f in th["files"]] == [f"chunks/{s}" for s in segs] + [
        "index", "meta.json"]
    assert "index_stats" not in th and "upload_time" not in th
    assert th["labels"] == {"a": "b"} and th["source"] == "compactor"


def test_postings_section_starts_before_its_alignment_padding(tmp_path: Path) -> None:
    """As in Prometheus's (and so Thanos's) TOC: the postings section begins right after the
    series, and its first list is 4-byte aligned inside it (the TOC differed by that padding,
    the only byte that kept our compacted index from being Thanos's)."""
    for n in range(1, 9):  # some series section ends off a 4-byte boundary
        series = make_series(n, 30, seed=n)
        meta = write_block(tmp_path, [(lbls, cut_chunks(ts, vals, 0, 10**9))
                                      for lbls, ts, vals in series], 0, 10**9)
        buf = (tmp_path / meta.ulid / "index").read_bytes()
        toc = IndexReader(buf).toc
        assert toc.label_indices == toc.postings
        assert buf[toc.postings:toc.postings + (-toc.postings % 4)] == b"\0" * (-toc.postings % 4)
        with BlockReader(tmp_path / meta.ulid) as br:
            assert len(br.series(0, 10**9, [Matcher("=~", "__name__", ".+")])) == n
        if toc.postings % 4:
            return
    raise AssertionError("no series section ended off a 4-byte boundary")


# --------------------------------------------------------------------------- promtool block → us


def openmetrics(series: Series) -> str:
    lines = []
    by_name: dict[str, list] = {}
    for lbls, ts, vals in series:
        by_name.setdefault(dict(lbls)["__name__"], []).append((lbls, ts, vals))
    for name, group in by_name.items():
        lines.append(f"# TYPE {name} gauge")
        for lbls, ts, vals in group:
            ls = ",".join(f'{k}="{v}"' for k, v in lbls if k != "__name__")
            for t, v in zip(ts.tolist(), vals.tolist()):
                vs = "NaN" if math.isnan(v) else repr(v)
                lines.append(f"{name}{{{ls}}} {vs} {t // 1000}.{t % 1000:03d}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@needs_promtool
def test_read_promtool_made_blocks(tmp_path: Path) -> None:
    series = make_series(120, 600, t0=1_700_000_000_000, seed=3)
    for _, _, vals in series:  # OpenMetrics text cannot carry the stale-NaN bit pattern
        vals[np.isnan(vals)] = np.nan
    src = tmp_path / "in.om"
    src.write_text(openmetrics(series))
    data = tmp_path / "data"
    res = promtool("tsdb", "create-blocks-from", "openmetrics", str(src), str(data))
    assert res.returncode == 0, res.stderr
    blocks = sorted(p for p in data.iterdir() if (p / "meta.json").exists())
    assert blocks

    got: dict[Labels, list[tuple[np.ndarray, np.ndarray]]] = {}
    readers = [BlockReader(b) for b in blocks]
    try:
        for br in readers:
            assert br.index.version == 2
            for lbls, chunks in br.series(-2**62, 2**62, [Matcher("=~", "__name__", ".+")]):
                t, v = decode_many([c[2] for c in chunks], -2**62, 2**62)
                assert t[0] >= br.meta.min_time and t[-1] < br.meta.max_time
                for a, z, data_ in chunks:
                    ct, _ = decode(data_)
                    assert (ct[0], ct[-1]) == (a, z)
                got.setdefault(lbls, []).append((t, v))
        assert sorted(got) == [s[0] for s in series]
        for lbls, ts, vals in series:
            parts = sorted(got[lbls], key=lambda p: p[0][0])
            gt = np.concatenate([p[0] for p in parts])
            gv = np.concatenate([p[1] for p in parts])
            assert np.array_equal(gt, ts)
            assert same_values(gv, vals)  # Go parses "NaN" to its own NaN bit pattern
            ok = ~np.isnan(vals)
            assert np.array_equal(bits(gv[ok]), bits(vals[ok]))

        # Postings and every matcher type, against brute force over the block's label sets.
        for br in readers:
            ir = br.index
            ids = ir.all_postings()
            label_sets = [ir.series(int(i))[0] for i in ids]
            assert label_sets == sorted(label_sets)
            assert ir.label_names() == sorted({n for ls in label_sets for n, _ in ls})
            assert ir.label_values("job") == sorted({dict(ls)["job"] for ls in label_sets})
            for i, ls in zip(ids, label_sets):
                for n, v in ls:
                    assert i in ir.postings(n, v)
            for ms in all_matchers(label_sets):
                want = [i for i, ls in zip(ids, label_sets) if matches_all(ls, ms)]
                assert ir.select(ms).tolist() == want, ms
    finally:
        for br in readers:
            br.close()


# --------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path) -> None:
    series = make_series(500, 700, seed=5)
    mint, maxt = 1_000_000, 1_000_000 + 7_200_000
    meta = write_block_from_samples(tmp_path, series, mint, maxt)
    assert read_meta(tmp_path / meta.ulid) == meta
    assert (tmp_path / meta.ulid / "tombstones").read_bytes() == bytes.fromhex("0130ba300100000000")

    with BlockReader(tmp_path / meta.ulid) as br:
        got = br.series(mint, maxt, [])
        assert [g[0] for g in got] == [s[0] for s in series]
        for (lbls, ts, vals), (glbls, chunks) in zip(series, got):
            keep = (ts >= mint) & (ts < maxt)
            assert all(len(decode(c[2])[0]) <= 120 for c in chunks)
            t, v = decode_many([c[2] for c in chunks], mint, maxt)
            assert np.array_equal(t, ts[keep])
            assert np.array_equal(bits(v), bits(vals[keep]))  # stale NaN bits survive
            assert chunks[0][0] == ts[keep][0] and chunks[-1][1] == ts[keep][-1]

        # Time filtering picks exactly the chunks overlapping the inclusive range.
        lbls, chunks = br.series(mint, maxt, [])[0]
        a, z = chunks[1][0], chunks[1][1]
        assert [c[:2] for c in br.series(a, z, [])[0][1]] == [chunks[1][:2]]
        assert [c[:2] for c in br.series(chunks[0][1], a, [])[0][1]] == [c[:2] for c in chunks[:2]]
        assert br.series(maxt, maxt + 10, []) == []

        ir = br.index
        label_sets = [s[0] for s in series]
        ids = ir.all_postings()
        assert len(ids) == len(series) and np.all(np.diff(ids) > 0)
        for ms in all_matchers(label_sets):
            want = [int(i) for i, ls in zip(ids, label_sets) if matches_all(ls, ms)]
            assert ir.select(ms).tolist() == want, ms
        assert ir.label_values("env") == ["dev", "prod"]
        assert ir.label_values("nosuch") == []
        assert len(ir.postings("job", "job0")) == sum(dict(ls)["job"] == "job0" for ls in label_sets)
        assert len(ir.postings("job", "nope")) == 0


def test_write_block_rejects_bad_input_and_leaves_nothing(tmp_path: Path) -> None:
    s = make_series(3, 10)
    chunks = [(lbls, cut_chunks(ts, vals, 0, 10**12)) for lbls, ts, vals in s]
    with pytest.raises(ValueError, match="sorted"):
        write_block(tmp_path, [chunks[1], chunks[0]], 0, 10**12)
    with pytest.raises(ValueError, match="outside the block"):
        write_block(tmp_path, chunks, 0, int(s[0][1][-1]))
    with pytest.raises(ValueError, match="increasing"):
        cut_chunks(np.array([5, 5]), np.array([1.0, 2.0]), 0, 10)
    assert list(tmp_path.iterdir()) == []


def test_cut_chunks_respects_block_range() -> None:
    ts = np.arange(0, 1000, 3, dtype=np.int64)
    chunks = cut_chunks(ts, ts.astype(float), 100, 700)
    assert chunks[0][0] == 102 and chunks[-1][1] == 699
    assert [len(decode(c[2])[0]) for c in chunks] == [120, 80]


# --------------------------------------------------------------------------- corruption


def _flip(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x40
    path.write_bytes(bytes(b))


def _small_block(tmp_path: Path) -> Path:
    meta = write_block_from_samples(tmp_path, make_series(20, 300), 0, 10**12)
    return tmp_path / meta.ulid


def test_chunk_crc_corruption_detected(tmp_path: Path) -> None:
    bdir = _small_block(tmp_path)
    with BlockReader(bdir) as br:
        _, metas = br.index.series(int(br.index.all_postings()[3]))
        ref = metas[1][2]
    _flip(bdir / "chunks" / "000001", (ref & 0xFFFFFFFF) + 20)
    with ChunkReader(bdir / "chunks") as cr:
        with pytest.raises(CorruptionError, match="checksum"):
            cr.chunk(ref)
    with BlockReader(bdir) as br:
        with pytest.raises(CorruptionError):
            br.series(0, 10**12, [])


def test_index_crc_corruption_detected(tmp_path: Path) -> None:
    bdir = _small_block(tmp_path)
    ir = IndexReader((bdir / "index").read_bytes())
    toc = ir.toc
    series_off = int(ir.all_postings()[2]) * 16
    for off, call in [
        (toc.symbols + 12, lambda b: IndexReader(b)),
        (toc.postings_table + 12, lambda b: IndexReader(b)),
        (len(ir._b) - 10, lambda b: IndexReader(b)),                       # TOC
        (series_off + 3, lambda b: IndexReader(b).series(series_off // 16)),
        (toc.postings + 9, lambda b: IndexReader(b).all_postings()),
    ]:
        b = bytearray(ir._b)
        b[off] ^= 0x01
        with pytest.raises(CorruptionError):
            call(bytes(b))


def test_rejects_unknown_versions(tmp_path: Path) -> None:
    bdir = _small_block(tmp_path)
    idx = bytearray((bdir / "index").read_bytes())
    idx[4] = 1
    with pytest.raises(CorruptionError, match="version 1"):
        IndexReader(bytes(idx))
    idx[0] = 0
    with pytest.raises(CorruptionError, match="magic"):
        IndexReader(bytes(idx))
    m = json.loads((bdir / "meta.json").read_text())
    m["version"] = 2
    (bdir / "meta.json").write_text(json.dumps(m))
    with pytest.raises(CorruptionError, match="meta.json"):
        read_meta(bdir)


# --------------------------------------------------------------------------- pieces


def test_crc32c_known_values() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    data = bytes(range(256)) * 40
    assert crc32c(data[1000:], crc32c(data[:1000])) == crc32c(data)
    assert crc32c(memoryview(data)[3:77]) == crc32c(data[3:77])


def test_ulid() -> None:
    u = new_ulid(ms=1_469_918_176_385, entropy=bytes(10))
    assert u == "01ARYZ6S410000000000000000"  # timestamp part from the ULID spec example
    assert ulid_time(u) == 1_469_918_176_385
    a, b = new_ulid(), new_ulid()
    assert a != b and len(a) == 26 and re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", a)
    assert struct.pack(">Q", ulid_time(a))  # current time fits 48 bits
