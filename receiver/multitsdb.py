"""Per-tenant TSDBs of an ingestor: a head and a WAL each, under ``<tsdb.path>/<tenant>``.

Every tenant's series carry the external labels ``<tenant label>=<tenant>`` plus the ``--label``s,
added at query time (as Thanos does), so the head stores only what Prometheus sent.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from functools import partial
from operator import itemgetter
from typing import Any, Awaitable, Callable, Generator, Iterable, Iterator

import numpy as np

from .remotewrite import EX_OK, STATUS_INVALID_UTF8, DecodedWrite
from .tenancy import InvalidTenant, validate_tenant  # noqa: F401 -- InvalidTenant re-exported
from .tsdb.exemplars import ADDED, OUT_OF_ORDER as EXEMPLAR_OUT_OF_ORDER, \
    CircularExemplarStorage, ExemplarResult
from .tsdb._blockio import with_external_labels
from .tsdb.block import BlockMeta, BlockReader, write_block
from .tsdb.head import DUPLICATE, NO_TIME_MAX, NO_TIME_MIN, OK, OUT_OF_ORDER, TOO_OLD, Head, HeadOptions
from .tsdb.ooohead import OOO_HINT, OOOHead, is_ooo_block, merge_overlapping, ooo_block_series
from .tsdb.labels import Labels, Matcher
from .tsdb.histogram import from_proto_bytes, to_proto_bytes
from .wal import (WAL, ExemplarsRecord, HistogramsRecord, OOOHistogramsRecord, OOOSamplesRecord, SamplesRecord,
                  SeriesRecord, WALConfig)
from .wal.wal import lock_dir
from .wal.checkpoint import checkpoints, replay_checkpoint, write_checkpoint

log = logging.getLogger(__name__)

# series_status codes from the remote-write decoder (Thanos labelpb.ValidateLabels).
SERIES_EMPTY_LABELS, SERIES_DUPLICATE_LABELS, SERIES_UNSORTED_LABELS = 1, 2, 3


def _pick(items: list, idx: np.ndarray) -> list:
    """``[items[i] for i in idx]`` without a Python-level loop."""
    if len(idx) == 0:
        return []
    got = itemgetter(*idx.tolist())(items)
    return list(got) if len(idx) > 1 else [got]


_MALFORMED_TS = int(np.iinfo(np.int64).min)  # the decoder's mark for a malformed Histogram

# Timestamps beyond +-2^62 ms (146 million years) are refused whatever the flags say: block and
# chunk-range arithmetic on them (t + 2 ranges, aligned starts) must stay inside int64 here
# and in every Go reader of our blocks.
MAX_VALID_TS = 2**62
MIN_VALID_TS = -(2**62)
_NOT_CREATED = -2  # series ref of a valid series whose samples are all out of bounds


@dataclass
class TSDBOptions:
    path: Path
    external_labels: Labels = ()
    tenant_label_name: str = "tenant_id"
    head: HeadOptions = field(default_factory=HeadOptions)
    wal_fsync: str = "none"
    wal_segment_bytes: int = 128 << 20
    wal_compression: bool = True  # snappy per WAL record (--tsdb.wal-compression)
    # Local blocks older than this (by max time) are deleted once shipped (or always, with no
    # shipper: then they are the only copy and retention is all there is). 0 = keep forever.
    retention_ms: int = 15 * 86_400_000
    # At most this many tenants' WAL segment files stay open between writes (the least recently
    # written are closed and reopened on their next write), so descriptors do not grow with
    # tenants. Each tenant's WAL takes its own lock unless an owner locks the whole path.
    max_open_wals: int = 256
    lock_each_wal: bool = True
    # Samples later than now + this are refused (409 out of bounds), as Thanos's
    # --tsdb.too-far-in-future.time-window; 0 = off. See README for the default.
    too_far_in_future_ms: int = 10 * 60_000
    # Exemplars kept per tenant (--tsdb.max-exemplars; a ring, newest win); 0 = not stored.
    max_exemplars: int = 0


@dataclass
class ReplayStats:
    """What a WAL replay had to skip to start at all (each counted, logged once)."""

    corrupt_segments: int = 0  # segments (or missing ranges) whose rest could not be read
    invalid_series: int = 0  # series records whose label key does not decode
    unknown_ref_samples: int = 0  # samples of a series that no record defines
    invalid_histograms: int = 0  # native histogram samples whose message does not decode

    @property
    def skipped(self) -> int:
        return sum(asdict(self).values())

    @staticmethod
    def kinds() -> list[str]:
        return [f.name for f in fields(ReplayStats)]


@dataclass
class WriteOutcome:
    """Counts of one request's fate, enough to choose Thanos's status code and message."""

    appended: int = 0
    out_of_order_appended: int = 0  # of ``appended``: late samples the out-of-order head took
    out_of_order_histograms_appended: int = 0  # of those, native histogram samples
    out_of_order: int = 0
    duplicate: int = 0
    too_old: int = 0
    empty_labels: int = 0
    duplicate_labels: int = 0
    unsorted_labels: int = 0
    dropped_samples: int = 0  # samples of series rejected for their labels
    invalid_histograms: int = 0  # native histogram samples whose message is malformed/invalid
    invalid_utf8_labels: int = 0  # series refused because a label is not valid UTF-8
    too_far_in_future: int = 0  # samples past now + --tsdb.too-far-in-future.time-window
    out_of_bounds: int = 0  # samples with absurd timestamps (beyond +-2^62 ms)
    # Exemplars never fail a request (Prometheus logs and goes on); these only count them.
    exemplars_appended: int = 0
    exemplars_invalid: int = 0  # label set over 128 runes, not UTF-8, malformed, bad series
    exemplars_out_of_order: int = 0

    @property
    def http_status(self) -> int:
        """409 for conflicts (Thanos), but 400 when labels are not UTF-8: Prometheus's remote
        write handler calls those invalid labels, a client error no retry can fix."""
        return 400 if self.invalid_utf8_labels else 409

    @property
    def conflicts(self) -> list[str]:
        msgs = []
        for n, what in ((self.out_of_order, "out of order samples"),
                        (self.duplicate, "duplicate sample for timestamp"),
                        (self.too_old, "out of bounds samples (too old)"),
                        (self.too_far_in_future, "out of bounds samples (too far in the future)"),
                        (self.out_of_bounds, "out of bounds samples (timestamp beyond +-2^62 ms)"),
                        (self.empty_labels, "series with empty labels, label names or label values"),
                        (self.duplicate_labels, "series with duplicate label names"),
                        (self.unsorted_labels, "series with out-of-order label names"),
                        (self.invalid_utf8_labels, "series with invalid labels (label name or value is not valid UTF-8)"),
                        (self.invalid_histograms, "invalid native histogram samples")):
            if n:
                msgs.append(f"{n} {what}")
        return msgs


class TenantTSDB:
    """One tenant: head + WAL. All mutation happens on the event loop thread."""

    def __init__(self, tenant: str, opts: TSDBOptions) -> None:
        self.tenant = tenant
        self.dir = opts.path / tenant
        self.dir.mkdir(parents=True, exist_ok=True)
        self.head = Head(opts.head)
        self.wal = WAL(WALConfig(dir=self.dir / "wal", fsync=opts.wal_fsync,
                                 segment_bytes=opts.wal_segment_bytes, lock=opts.lock_each_wal,
                                 compression=opts.wal_compression))
        ext = dict(opts.external_labels)
        ext[opts.tenant_label_name] = tenant
        self.external_labels: Labels = tuple(sorted(ext.items()))
        self.block_range_ms = opts.head.chunk_range_ms
        self.retention_ms = opts.retention_ms
        self.too_far_in_future_ms = opts.too_far_in_future_ms
        self.blocks: dict[str, BlockReader] = {}
        self.replay_stats = ReplayStats()
        self.replay_seconds = 0.0  # prometheus_tsdb_data_replay_duration_seconds
        self.head_floor = int(NO_TIME_MAX)  # the head serves samples from here on
        self.exemplars = CircularExemplarStorage(opts.max_exemplars)
        self._load_blocks()

    # -- local blocks -------------------------------------------------------------------------

    def _load_blocks(self) -> None:
        for d in sorted(self.dir.iterdir()):
            if d.name.endswith(".tmp") and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)  # an interrupted block write
            elif (d / "meta.json").is_file() and d.name not in self.blocks:
                self.blocks[d.name] = BlockReader(d)
        self._blocks_changed()

    def _blocks_changed(self) -> None:
        # Samples before this are in blocks and the head refuses them; kept as a value because
        # every write needs it. Out-of-order blocks do not count: their range may reach past
        # the head's newest sample, and later in-order samples there are still welcome.
        self.blocks_max_time = max((b.meta.max_time for b in self.blocks.values()
                                    if not is_ooo_block(b.meta)), default=int(NO_TIME_MAX))

    def thanos_meta(self) -> dict:
        return {"labels": dict(self.external_labels), "downsample": {"resolution": 0},
                "source": "receive"}

    def _write_window(self, bmin: int, bmax: int) -> tuple[BlockMeta, BlockReader] | None:
        """Write the head's samples in [bmin, bmax) as a block. Reads the head only, so it
        runs in a worker thread while the loop appends (no write can land in a window being
        cut: the head refuses samples older than half a range behind its newest)."""
        series = self.head.block_series(bmin, bmax)
        if not series:
            return None
        meta = write_block(self.dir, series, bmin, bmax, thanos_meta=self.thanos_meta())
        return meta, BlockReader(self.dir / meta.ulid)

    def _add_block(self, written: tuple[BlockMeta, BlockReader] | None, upto: int) -> None:
        """Publish a cut window (on the loop, in one step): queries read it from the block and
        no longer from the head, whose data now resumes at the next window that has any."""
        if written is not None:
            meta, reader = written
            self.blocks[meta.ulid] = reader
            self._blocks_changed()
            log.info("persisted head block", extra={
                "tenant": self.tenant, "ulid": meta.ulid, "mint": meta.min_time,
                "maxt": meta.max_time, "series": meta.num_series, "samples": meta.num_samples})
        self.head_floor = max(self.head_floor, upto)
        self.head.min_time = self.head.min_time_from(upto)  # jump over empty windows

    def _truncate_head(self, upto: int) -> np.ndarray:
        """Worker thread: free the head's chunks below ``upto``; returns the series left
        empty, which the loop then removes (``Head.remove_empty_series``)."""
        self.head.truncate_samples(upto)
        return self.head.empty_series()

    def _write_checkpoint(self, seg: int, upto: int) -> None:
        """Worker thread: replace WAL segments before ``seg`` by a checkpoint of the head's
        series and samples >= ``upto``. Series and samples the loop adds meanwhile are in
        segments >= ``seg`` (and maybe in the checkpoint too: replaying twice is harmless)."""

        def records():
            refs = self.head.live_refs()
            for i in range(0, len(refs), 5000):
                batch = [r for r in refs[i:i + 5000] if self.head.key(r) is not None]
                keys = [self.head.key(r) for r in batch]
                parts = [self.head.samples(r, upto, np.iinfo(np.int64).max) for r in batch]
                counts = [len(p[0]) for p in parts]
                ts = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
                vals = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float64)
                sample_refs = np.repeat(np.array(batch, dtype=np.int64), counts)
                yield (SeriesRecord(np.array(batch, dtype=np.int64), keys),
                       SamplesRecord(sample_refs, ts, vals) if len(ts) else None,
                       self._hist_record(batch, upto))

        write_checkpoint(self.wal.cfg.dir, seg, itertools.chain(
            records(), self._ooo_records(), self._exemplar_records()),
            compression=self.wal.cfg.compression)
        self.wal.truncate_before(seg)
        self.wal.release()  # an idle tenant keeps no descriptor; the next write reopens it

    def _ooo_records(self) -> Iterator[tuple]:
        """Checkpoint records of the out-of-order samples (of a head being cut too, if its
        blocks are not in yet), after every series record."""
        for ooo in self.head.ooo_heads():
            refs, ts, vals = ooo.columns()
            uniq, inv = np.unique(refs, return_inverse=True)
            live = np.fromiter((self.head.key(r) is not None for r in uniq.tolist()), dtype=bool,
                               count=len(uniq))[inv]
            refs, ts, vals = refs[live], ts[live], vals[live]
            for i in range(0, len(refs), 100_000):
                yield (None, None, None, OOOSamplesRecord(refs[i:i + 100_000], ts[i:i + 100_000],
                                                          vals[i:i + 100_000]))
            h_refs, h_ts, raw = [], [], []
            for ref, hts, hhs in ooo.hists.items():
                if self.head.key(ref) is None:
                    continue
                for t, h in zip(hts, hhs):
                    h_refs.append(ref)
                    h_ts.append(t)
                    raw.append(to_proto_bytes(t, h))
            if raw:
                yield (None, None, None, None, OOOHistogramsRecord(
                    np.array(h_refs, dtype=np.int64), np.array(h_ts, dtype=np.int64), raw))

    def _exemplar_records(self) -> Iterator[tuple]:
        """The held exemplars of series still in the head, oldest first, for a checkpoint."""
        series, labels, vals, ts = self.exemplars.all_oldest_first()
        refs = [self.head.ref(k) for k in series]
        keep = [i for i, r in enumerate(refs) if r is not None]
        if keep:
            yield (None, None, None, None, None, ExemplarsRecord(
                np.array([refs[i] for i in keep], dtype=np.int64),
                np.array([ts[i] for i in keep], dtype=np.int64),
                np.array([vals[i] for i in keep], dtype=np.float64), [labels[i] for i in keep]))

    def _hist_record(self, refs: list[int], upto: int) -> HistogramsRecord | None:
        """The head's native histogram samples >= ``upto`` of ``refs``, for a checkpoint."""
        hh = self.head.hists
        if not hh.num_series:
            return None
        r_out: list[int] = []
        t_out: list[int] = []
        raw: list[bytes] = []
        for ref in refs:
            ts, hs = hh.samples(ref, upto, np.iinfo(np.int64).max)
            for t, h in zip(ts, hs):
                r_out.append(ref)
                t_out.append(t)
                raw.append(to_proto_bytes(t, h))
        if not r_out:
            return None
        return HistogramsRecord(np.array(r_out, dtype=np.int64), np.array(t_out, dtype=np.int64), raw)

    def _cut(self) -> Generator[Callable[[], Any], Any, list[BlockMeta]]:
        """The block cut as steps: each yielded callable is the slow part (disk, CPU) and may
        run in a worker thread; the code between yields mutates the head and runs where the
        writes run. Cuts the oldest block range once the head spans 1.5 ranges, as Prometheus
        does, so late samples within half a range are still accepted."""
        out: list[BlockMeta] = []
        r = self.block_range_ms
        h = self.head
        upto = None
        while h.num_series and h.min_time != NO_TIME_MIN and h.max_time - h.min_time > r * 3 // 2:
            bmin = (h.min_time // r) * r
            # A block from an older version's shutdown flush may cover the window's start.
            written = yield partial(self._write_window, max(bmin, self.blocks_max_time), bmin + r)
            upto = bmin + r
            self._add_block(written, upto)
            if written is not None:
                out.append(written[0])
        if upto is not None:
            # The rotation and the out-of-order freeze happen in one loop step: every late
            # sample in the segments the checkpoint replaces is in the frozen head's blocks.
            seg = self.wal.rotate()
            if h.ooo_heads():
                frozen = h.freeze_ooo()
                written_ooo = yield partial(self._write_ooo_blocks, frozen)
                for meta, reader in written_ooo:
                    self.blocks[meta.ulid] = reader
                    out.append(meta)
                    log.info("persisted out-of-order block", extra={
                        "tenant": self.tenant, "ulid": meta.ulid, "mint": meta.min_time,
                        "maxt": meta.max_time, "series": meta.num_series,
                        "samples": meta.num_samples})
                self._blocks_changed()
                h.ooo_frozen = None
            empty = yield partial(self._truncate_head, upto)
            h.remove_empty_series(empty)
            yield partial(self._write_checkpoint, seg, upto)
        return out

    def _write_ooo_blocks(self, ooo: OOOHead) -> list[tuple[BlockMeta, BlockReader]]:
        """Worker thread: the frozen out-of-order head as one block per block range it
        touches, marked ``from-out-of-order`` (they may overlap in-order blocks)."""
        out = []
        for bmin, series in ooo_block_series(ooo, self.head.labels, self.block_range_ms,
                                             self.head.opts.samples_per_chunk):
            meta = write_block(self.dir, series, bmin, bmin + self.block_range_ms,
                               thanos_meta=self.thanos_meta(), compaction={"hints": [OOO_HINT]})
            out.append((meta, BlockReader(self.dir / meta.ulid)))
        return out

    def compact(self) -> list[BlockMeta]:
        """The block cut, all on the calling thread (tests, tools)."""
        steps = self._cut()
        result = None
        try:
            while True:
                result = steps.send(result)()
        except StopIteration as done:
            return done.value

    async def compact_async(self, run: Callable[[Callable[[], Any]], Awaitable[Any]]
                            ) -> list[BlockMeta]:
        """The block cut with its slow steps handed to ``run`` (a worker thread), so the
        event loop keeps answering writes, queries and /-/ready meanwhile."""
        steps = self._cut()
        result = None
        try:
            while True:
                result = await run(steps.send(result))
        except StopIteration as done:
            return done.value

    def delete_block(self, ulid: str) -> None:
        b = self.blocks.pop(ulid, None)
        if b is not None:
            b.close()
        shutil.rmtree(self.dir / ulid, ignore_errors=True)
        self._blocks_changed()

    def expired_blocks(self, now_ms: int) -> list[str]:
        if not self.retention_ms:
            return []
        return [u for u, b in self.blocks.items() if b.meta.max_time < now_ms - self.retention_ms]

    # -- queries ------------------------------------------------------------------------------

    def series(self, matchers: list[Matcher], mint: int, maxt: int, skip_chunks: bool = False):
        """Head, out-of-order head and local blocks merged: one entry per label set, chunks
        in time order and not overlapping (one sample per timestamp: in-order data wins, then
        the older out-of-order block)."""
        # Below head_floor the data is in blocks (the head still holds it until truncated).
        parts = [self.head.series(matchers, max(mint, self.head_floor), maxt, skip_chunks)]
        blocks = sorted(self.blocks.items(), key=lambda kv: (is_ooo_block(kv[1].meta), kv[0]))
        for _, b in blocks:
            if b.meta.max_time > mint and b.meta.min_time <= maxt:
                got = b.series(mint, maxt, matchers)
                parts.append([(l, []) for l, _ in got] if skip_chunks else got)
        for ooo in self.head.ooo_heads():
            parts.append(self.head.ooo_series(matchers, mint, maxt, ooo))
        if len(parts) == 1:
            return parts[0]
        merged: dict[Labels, list] = {}
        for part in parts:
            for lbls, chunks in part:
                merged.setdefault(lbls, []).extend(chunks)
        if skip_chunks:
            return sorted((l, []) for l in merged)
        spc = self.head.opts.samples_per_chunk
        return sorted((l, merge_overlapping(c, spc)) for l, c in merged.items())

    def label_names(self, matchers: list[Matcher]) -> set[str]:
        names = set(self.head.label_names(matchers))
        for b in list(self.blocks.values()):
            if matchers:
                names.update(n for l in _block_labels(b, matchers) for n, _ in l)
            else:
                names.update(b.index.label_names())
        return names

    def label_values(self, name: str, matchers: list[Matcher]) -> set[str]:
        values = set(self.head.label_values(name, matchers))
        for b in list(self.blocks.values()):
            if matchers:
                values.update(v for l in _block_labels(b, matchers) for n, v in l if n == name)
            else:
                values.update(b.index.label_values(name))
        return values

    @property
    def num_series(self) -> int:
        return self.head.num_series

    def time_range(self) -> tuple[int, int] | None:
        lo, hi = [], []
        if self.head.num_series and self.head.min_time != NO_TIME_MIN:
            lo.append(self.head.min_time)
            hi.append(self.head.max_time)
        for b in self.blocks.values():
            lo.append(b.meta.min_time)
            hi.append(b.meta.max_time - 1)
        for ooo in self.head.ooo_heads():
            lo.append(ooo.min_time)
            hi.append(ooo.max_time)
        return (min(lo), max(hi)) if lo else None

    # -- WAL ----------------------------------------------------------------------------------

    def replay(self) -> int:
        """Load the newest checkpoint and the WAL after it into the head; returns samples
        restored. Samples already in local blocks are skipped.

        Never refuses to start: a record that does not fit (a series whose labels do not
        decode, samples of a series never defined, a corrupt segment) is skipped, counted in
        ``replay_stats`` and logged once per kind."""
        # A logged ref normally comes back unchanged; a lookup table covers the rare series
        # that was logged twice under different refs. -1 marks refs never (validly) defined.
        t0 = time.monotonic()
        try:
            return self._replay()
        finally:
            self.replay_seconds = time.monotonic() - t0

    def _replay(self) -> int:
        lut = np.zeros(0, dtype=np.int64)
        stats = self.replay_stats = ReplayStats()
        restored = 0
        floor = self.blocks_max_time

        def corrupt(msg: str) -> None:
            stats.corrupt_segments += 1
            log.error(msg, extra={"tenant": self.tenant})

        cps = checkpoints(self.wal.cfg.dir)
        records: Iterable = self.wal.replay(corrupt)
        if cps:
            seg, path = cps[-1]
            self.wal.truncate_before(seg)  # a crash may have left segments the checkpoint covers
            records = itertools.chain(replay_checkpoint(path, corrupt), self.wal.replay(corrupt))
        for rec in records:
            if isinstance(rec, SeriesRecord):
                refs = rec.refs.tolist()
                top = max(refs, default=-1)
                if top >= len(lut):
                    grown = np.full(max(top + 1, 2 * len(lut)), -1, dtype=np.int64)
                    grown[:len(lut)] = lut
                    lut = grown
                got = np.array(self.head.restore_series(refs, rec.keys), dtype=np.int64)
                stats.invalid_series += int(np.count_nonzero(got < 0))
                logged = np.asarray(refs, dtype=np.int64)
                lut[logged[logged >= 0]] = got[logged >= 0]
                continue
            refs = np.asarray(rec.refs, dtype=np.int64)
            known = (refs >= 0) & (refs < len(lut))
            mapped = np.full(len(refs), -1, dtype=np.int64)
            mapped[known] = lut[refs[known]]
            good = mapped >= 0
            if not good.all():
                stats.unknown_ref_samples += int(np.count_nonzero(~good))
            if isinstance(rec, ExemplarsRecord):
                self._replay_exemplars(rec, mapped)
            elif isinstance(rec, HistogramsRecord):
                restored += self._replay_histograms(rec, mapped, good, floor, stats)
            elif isinstance(rec, OOOSamplesRecord):
                restored += self.head.replay_late(mapped[good], rec.ts[good], rec.vals[good])
            elif isinstance(rec, OOOHistogramsRecord):
                refs_, ts_, hists_ = self._decode_histograms(rec, mapped, stats)
                restored += self.head.replay_late_histograms(refs_, ts_, hists_)
            elif good.all():
                st = self.head.append(mapped, rec.ts, rec.vals, min_valid_time=floor)
                restored += int(np.count_nonzero(st == OK))
            elif good.any():
                st = self.head.append(mapped[good], rec.ts[good], rec.vals[good], min_valid_time=floor)
                restored += int(np.count_nonzero(st == OK))
        if stats.skipped:
            log.warning("WAL replay skipped records that do not fit the head",
                        extra={"tenant": self.tenant, **asdict(stats)})
        return restored

    def _replay_exemplars(self, rec: ExemplarsRecord, mapped: np.ndarray) -> None:
        """Logged exemplars back into the ring (those of unknown series, and repeats a
        checkpoint overlapping the segments brings, are dropped by the ring's own rules)."""
        keys = [self.head.key(r) if r >= 0 else None for r in mapped.tolist()]
        keep = [i for i, k in enumerate(keys) if k is not None]
        if keep:
            self.exemplars.add([keys[i] for i in keep], [rec.labels[i] for i in keep],  # type: ignore[misc]
                               rec.vals[keep].tolist(), rec.ts[keep].tolist())

    def _replay_histograms(self, rec: HistogramsRecord, mapped: np.ndarray, good: np.ndarray,
                           floor: int, stats: ReplayStats) -> int:
        refs, ts, hists = self._decode_histograms(rec, mapped, stats)
        st = self.head.append_histograms(refs, ts, hists, min_valid_time=floor)
        return int(np.count_nonzero(st == OK))

    @staticmethod
    def _decode_histograms(rec: HistogramsRecord | OOOHistogramsRecord, mapped: np.ndarray,
                           stats: ReplayStats) -> tuple[list[int], list[int], list]:
        """A logged histogram record's samples of known series, parsed (bad ones counted)."""
        refs: list[int] = []
        ts: list[int] = []
        hists = []
        for ref, t, raw in zip(mapped.tolist(), rec.ts.tolist(), rec.raw):
            if ref < 0:
                continue
            try:
                hists.append(from_proto_bytes(raw)[1])
            except ValueError:
                stats.invalid_histograms += 1
                continue
            refs.append(ref)
            ts.append(t)
        return refs, ts, hists

    def write(self, req: DecodedWrite) -> WriteOutcome:
        """Append what is valid, log it to the WAL, and report the rest (caller then syncs)."""
        out = WriteOutcome()
        status = req.series_status
        good_series = status == 0
        if not good_series.all():
            out.empty_labels = int(np.count_nonzero(status == SERIES_EMPTY_LABELS))
            out.duplicate_labels = int(np.count_nonzero(status == SERIES_DUPLICATE_LABELS))
            out.unsorted_labels = int(np.count_nonzero(status == SERIES_UNSORTED_LABELS))
            out.invalid_utf8_labels = int(np.count_nonzero(status == STATUS_INVALID_UTF8))
        latest = self._latest_valid_time()
        mvt = max(self.head.min_valid_time(), self.blocks_max_time)
        # As Prometheus, a series whose samples are all refused for their time (absurd, too far
        # in the future, too old) is never created: rejected bodies must not grow the head.
        has_sample, in_bounds = self._sample_bounds(req, self._oldest_appendable(mvt), latest)
        wanted = good_series & has_sample
        # Series the decoder resolved through this head's ref cache keep that ref (also when
        # not wanted: Prometheus sends a series' exemplars in entries of their own); the
        # others are looked up, and created when wanted, by label key.
        cached = self._cached_refs(req)
        series_ref = np.where(good_series, _NOT_CREATED, -1).astype(np.int64)
        if cached is not None:
            hit = cached >= 0
            series_ref[hit] = cached[hit]
            wanted &= ~hit
            others = np.flatnonzero(good_series & ~has_sample & ~hit)
        else:
            others = np.flatnonzero(good_series & ~wanted)
        idx = np.flatnonzero(wanted)
        good_keys = req.keys if len(idx) == req.n_series else req.keys_at(idx)
        refs, new_refs, new_keys = self.head.refs_for(good_keys)
        try:
            other_keys = req.keys_at(others) if len(others) else []
            known = self.head.known_refs(other_keys) if len(others) else None
            series_ref[idx] = refs
            if known is not None:
                series_ref[others[known >= 0]] = known[known >= 0]
            done = self._append(req, out, series_ref, new_refs, new_keys, in_bounds, latest, mvt)
        except BaseException:
            if new_keys:  # the head has these series now: the WAL must define them too
                self.wal.log(SeriesRecord(new_refs, new_keys), None)
            raise
        if req.cache is self.head.refcache:  # from now on these resolve in the decoder
            self.head.remember(good_keys, refs)
            if known is not None and (known >= 0).any():
                self.head.remember(_pick(other_keys, np.flatnonzero(known >= 0)), known[known >= 0])
        return done

    def _cached_refs(self, req: DecodedWrite) -> np.ndarray | None:
        """The refs the decoder took from this head's ref cache (-1: not cached), or None
        when it used no cache, another head's, or a series left the head since (its ref may
        be among them)."""
        cache = self.head.refcache
        if req.cached_refs is None or req.cache is not cache or req.cache_generation != cache.generation:
            return None
        return req.cached_refs

    @staticmethod
    def _sample_bounds(req: DecodedWrite, oldest: int, latest: int
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per series of ``req``: whether one of its float or histogram samples lies in
        [oldest, latest]; and per float sample whether it lies in [MIN_VALID_TS, latest]
        (None: all do, the usual case, decided from the extremes alone)."""
        has = np.zeros(req.n_series, dtype=bool)
        lo = max(oldest, MIN_VALID_TS)
        ts = req.ts
        in_bounds = None
        if len(ts):
            t_min, t_max = int(ts.min()), int(ts.max())
            if t_max > latest or t_min < MIN_VALID_TS:
                in_bounds = (ts <= latest) & (ts >= MIN_VALID_TS)
            if lo <= t_min and t_max <= latest:
                has[req.sample_series] = True
            else:
                has[req.sample_series[(ts >= lo) & (ts <= latest)]] = True
        if len(req.hist_series):
            hts = req.hist_ts
            has[req.hist_series[(hts >= lo) & (hts <= latest)]] = True
        return has, in_bounds

    def _oldest_appendable(self, mvt: int) -> int:
        """No sample older than this can be appended (in order, or to the out-of-order head)."""
        window, head_maxt = self.head.opts.ooo_window_ms, self.head.max_time
        if window > 0 and head_maxt != NO_TIME_MAX:
            return min(mvt, head_maxt - window)
        return mvt

    def _append(self, req: DecodedWrite, out: WriteOutcome, series_ref: np.ndarray,
                new_refs: np.ndarray, new_keys: list[bytes], in_bounds: np.ndarray | None,
                latest: int, mvt: int) -> WriteOutcome:
        """``series_ref``: each request series' ref; -1 for rejected series (their samples are
        dropped), _NOT_CREATED for valid series left out of the head because every sample was
        refused for its time (counted out of bounds or too old, not as bad labels).
        ``in_bounds``: per sample, whether it is in [MIN_VALID_TS, latest] (None: all are)."""
        sample_refs = series_ref[req.sample_series] if len(req.sample_series) else series_ref[:0]
        keep = sample_refs != -1
        ts, vals = req.ts, req.vals
        if not keep.all():
            out.dropped_samples = int(np.count_nonzero(~keep))
            if in_bounds is None:
                sample_refs, ts, vals = sample_refs[keep], ts[keep], vals[keep]
        if in_bounds is not None:
            self._count_out_of_bounds(ts[keep & ~in_bounds], out)
            keep &= in_bounds
            sample_refs, ts, vals = sample_refs[keep], ts[keep], vals[keep]
        created = sample_refs != _NOT_CREATED
        if not created.all():
            out.too_old = int(np.count_nonzero(~created))
            sample_refs, ts, vals = sample_refs[created], ts[created], vals[created]
        head_maxt = self.head.max_time
        st = self.head.append(sample_refs, ts, vals, mvt)
        ok = st == OK
        out.appended = int(np.count_nonzero(ok))
        ooo_rec = None
        if out.appended != len(st):
            if self.head.opts.ooo_window_ms > 0:
                late_st = self.head.append_late(sample_refs, ts, vals, st, head_maxt)
                late_ok = (late_st == OK) & ~ok
                if late_ok.any():
                    ooo_rec = OOOSamplesRecord(sample_refs[late_ok], ts[late_ok], vals[late_ok])
                    out.out_of_order_appended = len(ooo_rec.refs)
                    out.appended += out.out_of_order_appended
                st = late_st
            out.out_of_order = int(np.count_nonzero(st == OUT_OF_ORDER))
            out.duplicate = int(np.count_nonzero(st == DUPLICATE))
            out.too_old += int(np.count_nonzero(st == TOO_OLD))
        series_rec = SeriesRecord(new_refs, new_keys) if len(new_keys) else None
        samples_rec = None
        if ok.any():
            if ok.all():
                samples_rec = SamplesRecord(sample_refs, ts, vals)
            else:
                samples_rec = SamplesRecord(sample_refs[ok], ts[ok], vals[ok])
        hist_rec = ooo_hist_rec = None
        if req.hist_raw:
            hist_rec, ooo_hist_rec = self._write_histograms(req, series_ref, mvt, latest, out,
                                                            head_maxt)
        ex_rec = self._add_exemplars(req, series_ref, out) if len(req.ex_series) else None
        if (hist_rec is not None or ooo_rec is not None or ooo_hist_rec is not None
                or ex_rec is not None):
            self.wal.log(series_rec, samples_rec, hist_rec, ooo_rec, ooo_hist_rec, ex_rec)
        elif series_rec is not None or samples_rec is not None:
            self.wal.log(series_rec, samples_rec)
        return out

    def _add_exemplars(self, req: DecodedWrite, series_ref: np.ndarray, out: WriteOutcome
                       ) -> ExemplarsRecord | None:
        """Put a request's valid exemplars into the ring; returns what to log. Invalid and
        out-of-order ones are only counted: they never fail the samples (as Prometheus)."""
        if not self.exemplars.enabled:
            return None
        refs = series_ref[req.ex_series]
        ok = (refs >= 0) & (req.ex_status == EX_OK)
        out.exemplars_invalid += int(np.count_nonzero(~ok))
        idx = np.flatnonzero(ok)
        if not len(idx):
            return None
        every = len(idx) == len(ok)
        labels = req.ex_keys if every else _pick(req.ex_keys, idx)
        vals, ts = (req.ex_vals, req.ex_ts) if every else (req.ex_vals[idx], req.ex_ts[idx])
        st = self.exemplars.add(req.keys_at(req.ex_series[idx]), labels, vals, ts)
        out.exemplars_out_of_order += int(np.count_nonzero(st == EXEMPLAR_OUT_OF_ORDER))
        added = np.flatnonzero(st == ADDED)
        out.exemplars_appended += len(added)
        if not len(added):
            return None
        if len(added) < len(st):
            labels = _pick(labels, added)
        return ExemplarsRecord(refs[idx][added], ts[added], vals[added], labels)

    def _latest_valid_time(self) -> int:
        """Newest timestamp a write may carry now (too far in the future past it)."""
        if self.too_far_in_future_ms <= 0:
            return MAX_VALID_TS
        return min(MAX_VALID_TS, int(time.time() * 1000) + self.too_far_in_future_ms)

    @staticmethod
    def _count_out_of_bounds(ts: np.ndarray, out: WriteOutcome) -> None:
        absurd = int(np.count_nonzero((ts > MAX_VALID_TS) | (ts < MIN_VALID_TS)))
        out.out_of_bounds += absurd
        out.too_far_in_future += len(ts) - absurd

    def _write_histograms(self, req: DecodedWrite, series_ref: np.ndarray, mvt: int,
                          latest: int, out: WriteOutcome, head_maxt: int
                          ) -> tuple[HistogramsRecord | None, OOOHistogramsRecord | None]:
        """Append a request's native histogram samples (after its floats, as Prometheus
        does; late ones within the out-of-order window to the out-of-order head); returns
        what to log. Counts go into ``out`` next to the float samples'."""
        refs_all = series_ref[req.hist_series].tolist()
        ts_all = req.hist_ts.tolist()
        idx: list[int] = []
        hists = []
        for i, (ref, t, raw) in enumerate(zip(refs_all, ts_all, req.hist_raw)):
            if ref == -1:
                out.dropped_samples += 1
                continue
            if t != _MALFORMED_TS and not MIN_VALID_TS <= t <= latest:
                self._count_out_of_bounds(np.array([t], dtype=np.int64), out)
                continue
            if ref == _NOT_CREATED:  # a series not in the head: every sample too old
                if t == _MALFORMED_TS:
                    out.invalid_histograms += 1
                else:
                    out.too_old += 1
                continue
            try:
                if t == _MALFORMED_TS:
                    raise ValueError("malformed histogram message")
                hists.append(from_proto_bytes(raw)[1])
            except ValueError:
                out.invalid_histograms += 1
                continue
            idx.append(i)
        if not idx:
            return None, None
        refs = [refs_all[i] for i in idx]
        ts = [ts_all[i] for i in idx]
        in_order = self.head.append_histograms(refs, ts, hists, mvt)
        st = in_order
        if self.head.opts.ooo_window_ms > 0 and (in_order != OK).any():
            st = self.head.append_histograms_late(refs, ts, hists, in_order, head_maxt)
        in_order, st = in_order.tolist(), st.tolist()
        keep = [k for k, s in enumerate(in_order) if s == OK]
        late = [k for k, s in enumerate(st) if s == OK and in_order[k] != OK]
        out.appended += len(keep) + len(late)
        out.out_of_order_appended += len(late)
        out.out_of_order_histograms_appended += len(late)
        out.out_of_order += st.count(OUT_OF_ORDER)
        out.duplicate += st.count(DUPLICATE)
        out.too_old += st.count(TOO_OLD)

        def record(cls, ks: list[int]):
            if not ks:
                return None
            return cls(np.array([refs[k] for k in ks], dtype=np.int64),
                       np.array([ts[k] for k in ks], dtype=np.int64),
                       [req.hist_raw[idx[k]] for k in ks])
        return record(HistogramsRecord, keep), record(OOOHistogramsRecord, late)

    async def sync(self, to_disk: bool = False) -> None:
        """WAL on stable storage per the fsync policy; ``to_disk`` (shutdown) fsyncs anyway."""
        await self.wal.sync(force=to_disk)

    def reopen_wal(self) -> None:
        """A fresh WAL writer after a storage failure, starting from a checkpoint of the
        whole head.

        A write that failed half way (answered 503) may have put series and samples in the
        head that never reached the WAL; without them a later sample could name a series the
        WAL does not define, and a retried batch would be "out of order" yet not durable. The
        checkpoint makes the WAL hold exactly what the head holds."""
        cfg = self.wal.cfg
        try:
            self.wal.close()
        except OSError:
            pass  # the failed writer's state is unknown; the new one cuts any torn tail
        old, self.wal = self.wal, WAL(cfg)
        for counter in ("fsyncs", "fsync_seconds", "writes_failed", "repairs", "records_written",
                        "bytes_written"):  # counters never go back
            setattr(self.wal, counter, getattr(old, counter))
        if self.head.num_series:
            self._write_checkpoint(self.wal.rotate(), int(np.iinfo(np.int64).min))

    def close(self) -> None:
        self.wal.close()
        for b in self.blocks.values():
            b.close()


def _block_labels(b: BlockReader, matchers: list[Matcher]) -> Iterable[Labels]:
    """Label sets of a block's matching series, from the index alone (no chunk reads)."""
    return (b.index.series(ref)[0] for ref in b.index.select(matchers).tolist())


class MultiTSDB:
    """All tenants of an ingestor, opened lazily on first write and eagerly on start.

    One ``LOCK`` file guards the whole path (not one per tenant), and only the ``max_open_wals``
    most recently written tenants keep their WAL segment open: the descriptors an ingestor holds
    do not grow with its tenants.
    """

    def __init__(self, opts: TSDBOptions) -> None:
        opts.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_dir(opts.path, "TSDB directory")
        self.opts = replace(opts, lock_each_wal=False)
        self.tenants: dict[str, TenantTSDB] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()  # tenants whose WAL may be open

    def open_existing(self) -> int:
        """Open and replay every tenant found on disk; returns samples restored."""
        restored = 0
        for d in sorted(p for p in self.opts.path.iterdir()
                        if (p / "wal").is_dir() or any(p.glob("*/meta.json"))):
            t = TenantTSDB(d.name, self.opts)
            restored += t.replay()
            self.tenants[d.name] = t
            log.info("replayed tenant WAL", extra={"tenant": d.name, "series": t.head.num_series})
        return restored

    def tenant(self, name: str) -> TenantTSDB:
        """The tenant to write to (created on first use); marks it as most recently written."""
        t = self.tenants.get(name)
        if t is None:
            validate_tenant(name)
            t = self.tenants[name] = TenantTSDB(name, self.opts)
        self._recent[name] = None
        self._recent.move_to_end(name)
        if len(self._recent) > self.opts.max_open_wals:
            self._release_idle_wals()
        return t

    def _release_idle_wals(self) -> None:
        """Close the least recently written WALs beyond the cap; one still waiting for its
        fsync stays open until a later call."""
        excess = len(self._recent) - self.opts.max_open_wals
        for name in list(itertools.islice(self._recent, excess)):
            if self.tenants[name].wal.release():
                del self._recent[name]

    def reopen_wal(self, name: str) -> None:
        t = self.tenants.get(name)
        if t is not None:
            t.reopen_wal()

    def num_series(self) -> int:
        return sum(t.head.num_series for t in self.tenants.values())

    def memory_bytes(self) -> int:
        return sum(t.head.memory_bytes() for t in self.tenants.values())

    def replay_skipped(self, kind: str) -> int:
        return sum(getattr(t.replay_stats, kind) for t in list(self.tenants.values()))

    def close(self) -> None:
        for t in self.tenants.values():
            t.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class MultiTSDBSource:
    """StoreAPI view over every tenant: external-label matchers pick tenants, the rest series."""

    def __init__(self, db: MultiTSDB) -> None:
        self.db = db

    def _tenants_for(self, matchers: list[Matcher]) -> Iterable[tuple[TenantTSDB, list[Matcher]]]:
        for t in list(self.db.tenants.values()):
            ext = dict(t.external_labels)
            inner = []
            for m in matchers:
                if m.name in ext:
                    if not m.matches(ext[m.name]):
                        break
                else:
                    inner.append(m)
            else:
                yield t, inner

    def label_sets(self) -> list[Labels]:
        return [t.external_labels for t in self.db.tenants.values()]

    def time_range(self) -> tuple[int, int]:
        ranges = [r for r in (t.time_range() for t in self.db.tenants.values()) if r]
        if not ranges:
            return (np.iinfo(np.int64).max, np.iinfo(np.int64).min)
        return (min(r[0] for r in ranges), max(r[1] for r in ranges))

    def series(self, mint: int, maxt: int, matchers: list[Matcher], skip_chunks: bool):
        out = []
        for t, inner in self._tenants_for(matchers):
            ext = t.external_labels
            got = t.series(inner, mint, maxt, skip_chunks)
            merged = with_external_labels(got, ext) if isinstance(got, list) else None
            if merged is None:  # labels not name-sorted str pairs: merge per series
                ext_names = {n for n, _ in ext}
                merged = [(tuple(sorted([p for p in lbls if p[0] not in ext_names] + list(ext))), chunks)
                          for lbls, chunks in got]
            out += merged
        out.sort(key=itemgetter(0))
        return out

    def exemplars(self, start: int, end: int, selectors: list[list[Matcher]]
                  ) -> list[ExemplarResult]:
        """Exemplars of series matching any selector, external labels (the tenant's) added
        to the series labels, sorted by them."""
        per_tenant: dict[str, tuple[TenantTSDB, list[list[Matcher]]]] = {}
        for ms in selectors:
            for t, inner in self._tenants_for(ms):
                per_tenant.setdefault(t.tenant, (t, []))[1].append(inner)
        out = []
        for t, sels in per_tenant.values():
            ext = t.external_labels
            ext_names = {n for n, _ in ext}
            for r in t.exemplars.select(start, end, sels):
                merged = tuple(sorted([p for p in r.series_labels if p[0] not in ext_names]
                                      + list(ext)))
                out.append(ExemplarResult(merged, r.exemplars))
        out.sort(key=lambda r: r.series_labels)
        return out

    def exemplars_time_range(self) -> tuple[int, int] | None:
        ranges = [r for r in (t.exemplars.time_range() for t in self.db.tenants.values()) if r]
        return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None

    def label_names(self, mint: int, maxt: int, matchers: list[Matcher]) -> list[str]:
        names: set[str] = set()
        for t, inner in self._tenants_for(matchers):
            got = t.label_names(inner)
            if got or not inner:
                names.update(got)
                names.update(n for n, _ in t.external_labels)
        return sorted(names)

    def label_values(self, name: str, mint: int, maxt: int, matchers: list[Matcher]) -> list[str]:
        values: set[str] = set()
        for t, inner in self._tenants_for(matchers):
            ext = dict(t.external_labels)
            if name in ext:
                if t.num_series or t.blocks:
                    if not inner or t.label_names(inner):
                        values.add(ext[name])
            else:
                values.update(t.label_values(name, inner))
        return sorted(values)
