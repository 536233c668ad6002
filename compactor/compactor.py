"""``promring compact``: the Thanos-style compactor over one bucket.

One pass (``run_once``): read every block's meta and marks; mark blocks whose sources are
covered by another block (a crashed earlier pass); compact each group until nothing is
left to plan; downsample (raw -> 5m, then 5m -> 1h); apply retention per resolution; delete
blocks whose deletion mark is older than ``delete_delay``; drop old partial uploads.

Crash safety comes from ordering alone. A new block is uploaded chunks, index, then
``meta.json``: until meta.json exists nobody treats it as a block. Sources are marked for
deletion only after the result's meta.json is up, and deleted only ``delete_delay`` later.
A crash between the two leaves a result whose ``compaction.sources`` cover the sources, and
the next pass's coverage check marks them. Deletion removes meta.json first so a half-
deleted block reads as a partial upload, which the next pass finishes deleting.

Anything that cannot be compacted safely (overlapping downsampled blocks, overlaps with
vertical compaction off, corrupt blocks) halts that group: ``thanos_compact_halted`` goes to
1, the reason is logged, and no block of that group is written, marked or deleted any more
by this process. Native histogram chunks are not a reason: they are merged like floats, and
left out of downsampled blocks (logged per block; they remain in the raw blocks).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.ops import add_ops_routes, new_registry, start_site
from common.webconfig import WebConfigFile
from objstore import Bucket, ObjectNotFound, bucket_from_config
from objstore.metrics import instrumented
from objstore.blocks import block_metas
from receiver.tsdb.block import CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, ulid_time
from receiver.tsdb.relabel import selects_block
from receiver.tsdb.chunks import CorruptionError

from receiver.tsdb.aggr import DOWNSAMPLE_RANGE_1H, DOWNSAMPLE_RANGE_5M, RES_1H, RES_5M
from ui.blocks import BlockViewer
from .config import CompactConfig
from .downsample import downsample_block
from .marks import DELETION_MARK, mark_for_deletion
from .merge import HaltError, merge_blocks
from .planner import plan
from .state import BlockInfo, BucketState, GroupKey, sync_state

log = logging.getLogger(__name__)

Hook = Callable[[str], None]


class CompactorMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.halted = Gauge("thanos_compact_halted",
                            "1 when a group was halted because compacting it is unsafe.",
                            registry=r)
        self.iterations = Counter("thanos_compact_iterations", "Completed passes.", registry=r)
        self.pass_failures = Counter("promring_compact_pass_failures",
                                     "Passes that ended in an error.", registry=r)
        self.compactions = Counter("thanos_compact_group_compactions",
                                   "Group compactions done.", registry=r)
        self.vertical = Counter("thanos_compact_group_vertical_compactions",
                                "Group compactions that merged overlapping blocks.", registry=r)
        self.conflicting = Counter("promring_compact_conflicting_samples",
                                   "Samples dropped by vertical compaction because another "
                                   "block held a different value at the same timestamp (the "
                                   "earliest block's sample is kept).", registry=r)
        self.compaction_failures = Counter("thanos_compact_group_compactions_failures",
                                           "Failed group compactions.", registry=r)
        self.downsamples = Counter("thanos_compact_downsample", "Blocks downsampled.",
                                   ["resolution"], registry=r)
        self.downsample_failures = Counter("thanos_compact_downsample_failures",
                                           "Failed downsamplings.", ["resolution"], registry=r)
        self.marked = Counter("thanos_compact_blocks_marked", "Marker files written.",
                              ["marker", "reason"], registry=r)
        self.gc = Counter("thanos_compact_garbage_collected_blocks",
                          "Blocks marked because another block covers their sources.",
                          registry=r)
        self.cleaned = Counter("thanos_compact_blocks_cleaned", "Blocks deleted.", registry=r)
        self.cleanup_failures = Counter("thanos_compact_block_cleanup_failures",
                                        "Blocks that failed to delete.", registry=r)
        self.partial_deleted = Counter(
            "thanos_compact_aborted_partial_uploads_deletion_attempts",
            "Partial uploads deleted.", registry=r)
        self.samples = Counter("promring_compact_samples", "Samples read by compaction and "
                               "downsampling.", ["kind"], registry=r)
        self.duration = Histogram("promring_compact_pass_duration_seconds",
                                  "Duration of compactor passes.", registry=r,
                                  buckets=(0.1, 1, 10, 60, 300, 1800, 7200))
        self.todo = Gauge("thanos_compact_todo_compactions",
                          "Compactions planned in the last planning round.", registry=r)


@dataclass
class PassResult:
    compactions: int = 0
    downsamples: int = 0
    marked: int = 0
    deleted: int = 0
    halted: dict[str, str] = field(default_factory=dict)  # group -> reason


def group_name(key: GroupKey) -> str:
    lbls, res = key
    return f"{res}@{{{','.join(f'{k}={v!r}' for k, v in lbls)}}}"


class Compactor:
    """One bucket's compactor; ``hook`` is called with a step name between every durable
    step (tests raise from it to simulate a crash there)."""

    def __init__(self, cfg: CompactConfig, registry: CollectorRegistry | None = None,
                 bucket: Bucket | None = None, *, hook: Hook | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.registry = registry or new_registry()
        self.metrics = CompactorMetrics(self.registry)
        self.halted: dict[str, str] = {}
        self.ready = False
        self.ports: dict[str, int] = {}
        self._bucket = bucket
        self._own_bucket = bucket is None
        self._hook = hook or (lambda step: None)
        self._now = now
        self._replicas = frozenset(cfg.dedup_replica_labels)
        self._runner: web.AppRunner | None = None
        self._viewer: BlockViewer | None = None
        self._work = Path(cfg.data_dir) / "compact"
        self._ds_work = Path(cfg.data_dir) / "downsample"

    @property
    def bucket(self) -> Bucket:
        if self._bucket is None:
            self._bucket = instrumented(bucket_from_config(self.cfg.objstore_config), self.registry)
        return self._bucket

    # -- lifecycle

    async def start_http(self) -> None:
        """/metrics, health and, as Thanos's compactor, the bucket UI (/blocks, /api/v1/blocks)."""
        if self.cfg.http_address and self._runner is None:
            app = web.Application()
            add_ops_routes(app, self.registry, lambda: self.ready)
            self._viewer = BlockViewer(lambda: block_metas(self.bucket), self.cfg.block_viewer_sync_s,
                                       self.cfg.bucket_web_label)
            self._viewer.register(app)
            web_config = WebConfigFile(self.cfg.http_config) if self.cfg.http_config else None
            self._runner, self.ports["http"] = await start_site(app, self.cfg.http_address,
                                                                web_config=web_config)
            host = self.cfg.http_address.rpartition(":")[0] or "0.0.0.0"
            log.info("listening", extra={"http_address": f"{host}:{self.ports['http']}"})
            self._viewer.start()

    async def close(self) -> None:
        if self._viewer is not None:
            await self._viewer.stop()
            self._viewer = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_bucket and self._bucket is not None:
            await self._bucket.close()
            self._bucket = None

    async def run(self) -> PassResult:
        """One pass, or with ``wait`` a pass every ``wait_interval_s`` until cancelled."""
        await self.start_http()
        try:
            while True:
                try:
                    res = await self.run_once()
                except Exception as e:  # noqa: BLE001 -- with --wait, retry next interval
                    if not self.cfg.wait:
                        raise
                    log.error("compaction pass failed", extra={"err": repr(e)})
                    res = PassResult(halted=dict(self.halted))
                if not self.cfg.wait:
                    return res
                await asyncio.sleep(self.cfg.wait_interval_s)
        finally:
            await self.close()

    async def run_once(self) -> PassResult:
        t0 = time.perf_counter()
        res = PassResult()
        try:
            st = await self._sync()
            self.ready = True
            res.marked += await self._collect_garbage(st)
            res.compactions += await self._compact_all(st)
            if not self.cfg.downsampling_disable:
                res.downsamples += await self._downsample(st)
            res.marked += await self._retention(st)
            res.deleted += await self._clean(st)
        except Exception:
            self.metrics.pass_failures.inc()
            raise
        finally:
            self.metrics.duration.observe(time.perf_counter() - t0)
        self.metrics.iterations.inc()
        res.halted = dict(self.halted)
        return res

    async def retention_pass(self) -> int:
        """Only the retention step (``tools bucket retention``) over the blocks the selector
        keeps: those past retention are marked for deletion; how many were marked now."""
        return await self._retention(await self._sync())

    # -- state

    async def _sync(self) -> BucketState:
        st = await sync_state(self.bucket, self.cfg.sync_concurrency)
        for u, why in st.corrupted.items():
            log.warning("ignoring block with unreadable meta.json", extra={"block": u, "err": why})
        delay_ms = self.cfg.consistency_delay_s * 1000
        now_ms = self._now() * 1000
        for u in list(st.blocks):
            b = st.blocks[u]
            if not selects_block(u, (b.meta.thanos or {}).get("labels"), self.cfg.selector):
                del st.blocks[u]  # another compactor's shard (Thanos's label-sharded filter)
                continue
            src = (b.meta.thanos or {}).get("source", "")
            # Thanos's consistency delay: a fresh upload may still be settling; our own
            # outputs are complete by construction.
            if src != "compactor" and b.deletion_mark is None and \
                    now_ms - ulid_time(u) < delay_ms:
                del st.blocks[u]
        return st

    def _halt(self, key: GroupKey, reason: str) -> None:
        name = group_name(key)
        if name not in self.halted:
            log.error("halting compaction of group; its blocks are left untouched, fix and "
                      "restart", extra={"group": name, "reason": reason})
        self.halted[name] = reason
        self.metrics.halted.set(1)

    def _is_halted(self, b: BlockInfo) -> bool:
        return group_name(b.group_key(self._replicas)) in self.halted

    async def _mark(self, st: BucketState, b: BlockInfo, reason: str, details: str) -> bool:
        now = self._now()
        wrote = await mark_for_deletion(self.bucket, b.ulid, details, now)
        b.deletion_mark = {"id": b.ulid, "deletion_time": int(now), "details": details}
        if wrote:
            self.metrics.marked.labels(DELETION_MARK, reason).inc()
        return wrote

    async def _collect_garbage(self, st: BucketState) -> int:
        n = 0
        for u, by in st.covered().items():
            b = st.blocks[u]
            if self._is_halted(b):
                continue
            log.info("marking block covered by another block for deletion",
                     extra={"block": u, "covered_by": by})
            await self._mark(st, b, "compacted", f"sources included in block {by}")
            self._hook("gc:marked")
            self.metrics.gc.inc()
            n += 1
        return n

    # -- transfer

    async def _download(self, b: BlockInfo, dest: Path) -> Path:
        d = dest / b.ulid
        shutil.rmtree(d, ignore_errors=True)
        (d / CHUNKS_DIRNAME).mkdir(parents=True)
        wanted = [f for f in b.files
                  if f == f"{b.ulid}/{INDEX_FILENAME}" or f == f"{b.ulid}/{META_FILENAME}"
                  or f.startswith(f"{b.ulid}/{CHUNKS_DIRNAME}/")]
        sem = asyncio.Semaphore(8)

        async def one(name: str) -> None:
            async with sem:
                data = await self.bucket.get(name)
            await asyncio.to_thread((d / name[len(b.ulid) + 1:]).write_bytes, data)

        await asyncio.gather(*(one(f) for f in wanted))
        return d

    async def _upload(self, block_dir: Path, step: str) -> None:
        ulid = block_dir.name
        for f in sorted((block_dir / CHUNKS_DIRNAME).iterdir()):
            await self.bucket.upload(f"{ulid}/{CHUNKS_DIRNAME}/{f.name}", f)
        self._hook(f"{step}:uploaded-chunks")
        await self.bucket.upload(f"{ulid}/{INDEX_FILENAME}", block_dir / INDEX_FILENAME)
        self._hook(f"{step}:uploaded-index")
        await self.bucket.upload(f"{ulid}/{META_FILENAME}", block_dir / META_FILENAME)
        self._hook(f"{step}:uploaded-meta")

    # -- compaction

    async def _compact_all(self, st: BucketState) -> int:
        done = 0
        sem = asyncio.Semaphore(max(1, self.cfg.concurrency))
        while True:
            jobs = []
            for key, blocks in sorted(st.groups(self._replicas).items()):
                if group_name(key) in self.halted:
                    continue
                kind, picked = plan(blocks, self.cfg.block_ranges_ms)
                if not picked:
                    continue
                if kind == "vertical" and (key[1] != 0 or
                                           not self.cfg.enable_vertical_compaction):
                    self._halt(key, "overlapping blocks: " + ", ".join(
                        f"{b.ulid}[{b.min_time},{b.max_time})" for b in picked))
                    continue
                jobs.append((key, kind, picked))
            self.metrics.todo.set(len(jobs))
            if not jobs:
                return done

            async def run(job: tuple[GroupKey, str, list[BlockInfo]]) -> bool:
                async with sem:
                    return await self._compact_group(st, *job)

            results = await asyncio.gather(*(run(j) for j in jobs))
            done += sum(results)

    async def _compact_group(self, st: BucketState, key: GroupKey, kind: str,
                             blocks: list[BlockInfo]) -> bool:
        name = group_name(key)
        work = self._work / f"{key[1]}-{abs(hash(key)):x}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            dirs = [await self._download(b, work) for b in blocks]
            self._hook("compact:downloaded")
            vertical = kind == "vertical"
            t0 = time.perf_counter()
            meta, stats = await asyncio.to_thread(
                merge_blocks, dirs, work / "out", vertical=vertical, resolution=key[1],
                thanos_labels=dict(key[0]), metas=[b.meta for b in blocks])
            in_samples = sum(b.meta.num_samples for b in blocks)
            self.metrics.samples.labels("compacted").inc(in_samples)
            log.info("compacted group", extra={
                "group": name, "kind": kind, "sources": [b.ulid for b in blocks],
                "result": meta.ulid, "series": stats["series"],
                "histogram_series_merged": stats.get("histogram_series", 0),
                "histogram_samples_out": meta.num_histogram_samples, "samples_in": in_samples,
                "samples_out": meta.num_samples, "conflicting_samples": stats["conflicting_samples"],
                "seconds": round(time.perf_counter() - t0, 3)})
            if stats["conflicting_samples"]:
                self.metrics.conflicting.inc(stats["conflicting_samples"])
                log.warning("overlapping blocks held different values for the same samples; "
                            "kept the earliest block's", extra={
                                "group": name, "sources": [b.ulid for b in blocks],
                                "conflicting_samples": stats["conflicting_samples"]})
            if meta.num_series == 0:
                log.info("compaction result is empty; only marking sources",
                         extra={"group": name})
            else:
                await self._upload(work / "out" / meta.ulid, "compact")
                files = [f"{meta.ulid}/{p.relative_to(work / 'out' / meta.ulid)}"
                         for p in (work / "out" / meta.ulid).rglob("*") if p.is_file()]
                st.blocks[meta.ulid] = BlockInfo(meta, files=files)
            for b in blocks:
                await self._mark(st, b, "compacted", f"compacted into {meta.ulid}")
                self._hook("compact:marked-source")
            self.metrics.compactions.inc()
            if vertical:
                self.metrics.vertical.inc()
            return True
        except HaltError as e:
            self.metrics.compaction_failures.inc()
            self._halt(key, str(e))
            return False
        except (CorruptionError, ObjectNotFound, ValueError) as e:
            # corrupt or inconsistent input (a listed object gone, chunks outside the
            # block's range...): never guess, stop this group
            self.metrics.compaction_failures.inc()
            self._halt(key, f"{type(e).__name__}: {e}")
            return False
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- downsampling

    async def _downsample(self, st: BucketState) -> int:
        n = 0
        for src_res, dst_res, min_span in ((0, RES_5M, DOWNSAMPLE_RANGE_5M),
                                           (RES_5M, RES_1H, DOWNSAMPLE_RANGE_1H)):
            have: set[str] = set()
            for b in st.blocks.values():  # marked ones too: their copies still count
                if b.resolution == dst_res:
                    have |= b.sources
            for b in st.live():
                if (b.resolution != src_res or b.no_downsample or self._is_halted(b)
                        or b.max_time - b.min_time < min_span or b.sources <= have):
                    continue
                if await self._downsample_block(st, b, dst_res):
                    have |= b.sources
                    n += 1
        return n

    async def _downsample_block(self, st: BucketState, b: BlockInfo, res: int) -> bool:
        work = self._ds_work / b.ulid
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            d = await self._download(b, work)
            t0 = time.perf_counter()
            skipped: dict[str, int] = {}
            meta, n_in = await asyncio.to_thread(downsample_block, d, work / "out", res,
                                                 skipped)
            self.metrics.samples.labels(f"downsampled-{res}").inc(n_in)
            if skipped.get("histogram_series"):
                self.metrics.samples.labels("histograms-not-downsampled").inc(
                    skipped["histogram_samples"])
                log.info("native histogram series are not downsampled; they stay in the raw "
                         "block", extra={"block": b.ulid, "resolution": res,
                                         "histogram_series": skipped["histogram_series"],
                                         "histogram_samples": skipped["histogram_samples"]})
            log.info("downsampled block", extra={
                "block": b.ulid, "resolution": res, "result": meta.ulid, "samples_in": n_in,
                "samples_out": meta.num_samples, "seconds": round(time.perf_counter() - t0, 3)})
            await self._upload(work / "out" / meta.ulid, "downsample")
            files = [f"{meta.ulid}/{p.relative_to(work / 'out' / meta.ulid)}"
                     for p in (work / "out" / meta.ulid).rglob("*") if p.is_file()]
            st.blocks[meta.ulid] = BlockInfo(meta, files=files)
            self.metrics.downsamples.labels(str(res)).inc()
            return True
        except (CorruptionError, ValueError, ObjectNotFound) as e:
            self.metrics.downsample_failures.labels(str(res)).inc()
            self._halt(b.group_key(self._replicas), f"downsampling {b.ulid}: {e}")
            return False
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- retention and deletion

    async def _retention(self, st: BucketState) -> int:
        keep = {0: self.cfg.retention_raw_ms, RES_5M: self.cfg.retention_5m_ms,
                RES_1H: self.cfg.retention_1h_ms}
        now_ms = int(self._now() * 1000)
        n = 0
        for b in st.live():
            limit = keep.get(b.resolution, 0)
            if limit > 0 and now_ms - b.max_time > limit and not self._is_halted(b):
                log.info("marking block past retention for deletion",
                         extra={"block": b.ulid, "resolution": b.resolution})
                if await self._mark(st, b, "retention", "retention policy"):
                    n += 1
        return n

    async def _delete_block(self, ulid: str, files: list[str]) -> None:
        """meta.json first (the block turns into a partial upload), the mark last."""
        order = sorted(files, key=lambda f: (f != f"{ulid}/{META_FILENAME}",
                                             f == f"{ulid}/{DELETION_MARK}", f))
        for i, f in enumerate(order):
            await self.bucket.delete(f)
            if i == 0:
                self._hook("clean:deleted-first")

    async def _clean(self, st: BucketState) -> int:
        now = self._now()
        n = 0
        for b in list(st.blocks.values()):
            mark = b.deletion_mark
            if mark is None or self._is_halted(b):
                continue
            try:
                marked_at = float(mark.get("deletion_time", now))
            except (TypeError, ValueError):
                marked_at = now
            if now - marked_at < self.cfg.delete_delay_s:
                continue
            try:
                files = await self.bucket.iter(b.ulid, recursive=True)
                await self._delete_block(b.ulid, files)
            except Exception as e:  # noqa: BLE001 -- try again next pass
                self.metrics.cleanup_failures.inc()
                log.warning("deleting block failed", extra={"block": b.ulid, "err": repr(e)})
                continue
            log.info("deleted block", extra={"block": b.ulid})
            del st.blocks[b.ulid]
            self.metrics.cleaned.inc()
            n += 1
        for u, files in list(st.partial.items()):
            names = {f[len(u) + 1:] for f in files}
            if DELETION_MARK not in names and not await self._partial_expired(files, now):
                continue
            log.info("deleting partial upload", extra={"block": u})
            try:
                await self._delete_block(u, files)
            except Exception as e:  # noqa: BLE001
                self.metrics.cleanup_failures.inc()
                log.warning("deleting partial block failed", extra={"block": u, "err": repr(e)})
                continue
            self.metrics.partial_deleted.inc()
            del st.partial[u]
        return n

    async def _partial_expired(self, files: list[str], now: float) -> bool:
        newest = 0.0
        for f in files:
            try:
                attrs = await self.bucket.attributes(f)
            except ObjectNotFound:
                continue
            lm = attrs.last_modified
            if lm.tzinfo is None:
                lm = lm.replace(tzinfo=timezone.utc)
            newest = max(newest, lm.timestamp())
        return now - newest >= self.cfg.partial_upload_age_s


async def run_forever(cfg: CompactConfig) -> None:
    """Convenience for a CLI: run until cancelled (or one pass without ``wait``)."""
    c = Compactor(cfg)
    with contextlib.suppress(asyncio.CancelledError):
        await c.run()
