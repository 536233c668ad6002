"""One block in object storage, queried through its index-header and ranged reads.

Postings lists, series entries and chunks are each located by the index-header or by refs,
their extent estimated (up to the next known item, or a size bound), nearby ranges coalesced
into one request, and anything longer than its estimate re-read exactly. Raw item bytes go to
the shared LRU, so repeated queries touch no bucket at all.
"""
from __future__ import annotations

import asyncio
from array import array
import itertools
import struct
from collections import deque
from functools import partial
from itertools import repeat
from operator import attrgetter, itemgetter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from objstore import Bucket, ObjectNotFound
from receiver.tsdb._blockio import crc32c, decode_series_batch, read_chunks
from receiver.tsdb.block import CHUNKS_DIRNAME, INDEX_FILENAME, BlockMeta
from receiver.tsdb.chunkenc import ENCODING_XOR
from receiver.tsdb.chunks import SEGMENT_HEADER_SIZE, CorruptionError, segment_name
from receiver.tsdb.histogram import ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM, EncodedChunk
from receiver.tsdb.index import EMPTY, SERIES_ALIGN
from receiver.tsdb.labels import Labels, Matcher, MatchType

from receiver.tsdb.aggr import ENCODING_AGGR, AggrChunk
from storeapi.server import AggrData

from ._items import both_postings, chunk_tuples, in_postings, split_items
from .bytelimit import Estimates, SeriesPlan, chunk_refetches, chunk_reservations
from .cache import LRUCache, PlainCounter, RemoteIndexCache
from .indexheader import HEADER_FILENAME, IndexHeader
from .indexverify import verify_index
from .limits import RequestLimiter
from .ranges import ByteBudget, Group, coalesce, fetch_groups, uvarint_at
from common.aio import gather_eager

# Read-ahead bounds when an item's end is unknown (Thanos uses 64 KiB and 16000 B); an item
# longer than its estimate costs one more exact request, never a wrong answer.
SERIES_SIZE_ESTIMATE = 16 << 10
CHUNK_SIZE_ESTIMATE = 16000
DEFAULT_MAX_GAP = 512 << 10
DEFAULT_MAX_RANGE = 8 << 20  # bigger coalesced reads are split to run in parallel
# A read spanning more than this (a big selection's chunks) goes range by range within the
# store's ByteBudget (fewer bytes read at once: one call per range), and its chunks are not
# put in the LRU: as in Thanos, whose index cache never holds chunks, a big query's chunks
# would only push out the postings and series entries the cache is for, and the cached copy
# doubled what the query held (at scale 4 a 24 h histogram_quantile left the store at
# 1,130 MiB instead of 870). A smaller read fetches its ranges together and keeps them.
BIG_READ = 4 << 20

Chunk = tuple[int, int, "bytes | AggrData"]


class SeriesEntries(NamedTuple):
    """Decoded series entries of one block: label sets, and chunk metas flat over all series
    (``chunk_counts[i]`` of them belong to series i, in order) as native int64 bytes, turned
    into arrays or lists by _chunks_in_range (whichever the selection's size calls for)."""

    labels: list[Labels]
    chunk_counts: bytes
    c_mint: bytes
    c_maxt: bytes
    c_ref: bytes
# storeapi Aggr enum (COUNT=1 .. COUNTER=5) -> Thanos AggrType index (count=0 .. counter=4).
_AGGR_FROM_PB = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
_HISTOGRAM_ENCODINGS = (ENCODING_HISTOGRAM, ENCODING_FLOAT_HISTOGRAM)
LengthAt = Callable[[memoryview, int], "int | None"]
Spans = Callable[[], "tuple[np.ndarray, np.ndarray]"]  # (starts, ends) of items to read
# A few items' reads worked out in one C call (store._items.item_reads): (mask, multiplier,
# estimate, lo, hi) -- item k starts at (ref & mask) * multiplier, within [lo, hi).
SmallItems = tuple[int, int, int, int, int]
ALL_BITS = (1 << 64) - 1
_ITEM_KINDS = {"postings": 0, "series": 1, "chunks": 2}  # store._items.split_items framing


class FetchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        kinds = tuple(_ITEM_KINDS)
        self.bytes = PlainCounter(registry, "promring_store_bucket_fetched_bytes",
                                  "Bytes read from object storage by queries.", "item_type",
                                  kinds)
        self.requests = PlainCounter(registry, "promring_store_bucket_range_requests",
                                     "Ranged reads issued by queries.", "item_type", kinds)
        self.refetches = Counter("promring_store_bucket_refetches",
                                 "Items longer than their size estimate, read again.",
                                 ["item_type"], registry=registry)
        self.skipped_chunks = Counter("promring_store_skipped_chunks",
                                      "Chunks not served because their encoding is neither XOR "
                                      "nor a native histogram one.",
                                      registry=registry)

    def fetched(self, kind: str, requests: int, nbytes: int) -> None:
        """Count one batch of ranged reads (plain integers: see store.cache.PlainCounter)."""
        self.requests.inc(kind, requests)
        self.bytes.inc(kind, nbytes)


@dataclass
class FetchOptions:
    max_gap: int = DEFAULT_MAX_GAP
    series_estimate: int = SERIES_SIZE_ESTIMATE
    chunk_estimate: int = CHUNK_SIZE_ESTIMATE
    max_range: int = DEFAULT_MAX_RANGE


# -- item framing: total length of the item starting at buf[i], None if its prefix is cut off.

def _postings_len(buf: memoryview, i: int) -> int | None:
    if i + 4 > len(buf):
        return None
    return 8 + struct.unpack_from(">I", buf, i)[0]


def _series_len(buf: memoryview, i: int) -> int | None:
    r = uvarint_at(buf, i)
    return None if r is None else (r[1] - i) + r[0] + 4


def _chunk_len(buf: memoryview, i: int) -> int | None:
    r = uvarint_at(buf, i)
    return None if r is None else (r[1] - i) + 1 + r[0] + 4


def _item_intact(raw: bytes, length_at: LengthAt, body: int | None) -> bool:
    """``raw`` is exactly one item whose trailing CRC32C matches; its checksummed body starts
    at ``body`` (postings) or after the length uvarint (series, chunks)."""
    mv = memoryview(raw)
    try:
        if length_at(mv, 0) != len(raw) or len(raw) < 5:
            return False
        if body is None:
            r = uvarint_at(mv, 0)
            if r is None:
                return False
            body = r[1]
    except ValueError:
        return False
    return crc32c(mv[body:-4]) == struct.unpack_from(">I", raw, len(raw) - 4)[0]


def _check_postings(raw: bytes) -> None:
    """CorruptionError unless ``raw`` is one postings list with a matching checksum: done
    once, as a list is read from the bucket, so a cached list is trusted (the remote cache's
    values are checked on their way in, see BucketBlock._from_remote)."""
    (ln,) = struct.unpack_from(">I", raw, 0)
    if len(raw) != ln + 8 or \
            crc32c(memoryview(raw)[4:4 + ln]) != struct.unpack_from(">I", raw, 4 + ln)[0]:
        raise CorruptionError("postings list: checksum mismatch")
    if ln < 4 or ln != 4 + 4 * struct.unpack_from(">I", raw, 4)[0]:
        raise CorruptionError("postings list: length disagrees with count")


def _decode_postings(raw: bytes) -> np.ndarray:
    """Series refs of a postings list that passed _check_postings."""
    return np.frombuffer(raw, dtype=">u4", count=(len(raw) - 12) >> 2, offset=8).astype(np.int64)


def intersect_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Values in both sorted, duplicate-free arrays: the shorter one looked up in the longer
    (a selective matcher against a long list costs a few binary searches, not a sort)."""
    if len(a) > len(b):
        a, b = b, a
    if len(a) == 0:
        return a
    at = np.searchsorted(b, a)
    np.minimum(at, len(b) - 1, out=at)
    return a[b[at] == a]


class PostingsPlan(NamedTuple):
    """What a selection reads: each matcher's postings ranges, the all-series list's range
    (only when no matcher narrows), and every range to read, sorted, no repeats."""

    matchers: list[tuple[Matcher, list[tuple[int, int]]]]
    all_range: tuple[int, int] | None
    ranges: list[tuple[int, int]]
    narrowing: list[list[tuple[int, int]]]  # ranges of the matchers not matching "", in order
    single: bool  # every matcher narrows and reads one list (combine's short path)
    in_order: bool = False  # narrowing[k] is [ranges[k]] for every k (each matcher's list)


# NamedTuples made once per block of a request, without their Python-level __new__
_new_plan = partial(tuple.__new__, PostingsPlan)
_new_entries = partial(tuple.__new__, SeriesEntries)


def combine_postings(plan: PostingsPlan, raws: dict[int, bytes]) -> np.ndarray:
    """Sorted series refs of a selection from its checked postings lists (by start offset).
    The narrowing matchers go shortest list first, and a later single list is searched in
    place (in C) for the refs found so far: a metric name's long list is never decoded
    just to keep the one series an instance matcher found."""
    if plan.all_range is None and plan.single:
        return combine_single([raws[rs[0][0]] for rs in plan.narrowing])

    def union(rs: list[tuple[int, int]]) -> np.ndarray:
        if not rs:
            return EMPTY
        if len(rs) == 1:
            return _decode_postings(raws[rs[0][0]])
        return np.unique(np.concatenate([_decode_postings(raws[r[0]]) for r in rs]))

    narrowing = [(rs, len(raws[rs[0][0]]) if len(rs) == 1 else
                  sum(map(len, map(raws.__getitem__, map(_START, rs)))))
                 for rs in plan.narrowing]
    if len(narrowing) > 1:
        narrowing.sort(key=itemgetter(1))
    result: np.ndarray | None = None
    for rs, _ in narrowing:
        if result is None:
            result = _decode_postings(raws[rs[0][0]]) if len(rs) == 1 else union(rs)
        elif len(rs) == 1:
            result = np.frombuffer(in_postings(result, raws[rs[0][0]]), np.int64)
        else:
            result = intersect_sorted(result, union(rs))
        if len(result) == 0:
            return EMPTY
    if plan.all_range is None and len(narrowing) == len(plan.matchers):
        return result  # type: ignore[return-value]  # (no empty-matching one to subtract)
    # then the empty-matching ones subtract
    for m, rs in plan.matchers:
        if m.matches_empty():
            base = _decode_postings(raws[plan.all_range[0]]) if result is None \
                else result  # type: ignore[index]
            bad = union(rs)
            result = np.setdiff1d(base, bad, assume_unique=True) if len(bad) else base
            if len(result) == 0:
                return EMPTY
    if result is None:
        return _decode_postings(raws[plan.all_range[0]])  # type: ignore[index]
    return result


def combine_single(lists: list[bytes]) -> np.ndarray:
    """combine_postings of a plan whose matchers each read one list, none matching "" (a
    dashboard's ``name{label="value"}``), from those lists in the plan's narrowing order:
    the shortest list decoded, each other one searched in place in C, without the general
    path's bookkeeping."""
    if len(lists) == 1:
        refs = _decode_postings(lists[0])
        return refs if len(refs) else EMPTY
    lists.sort(key=len)  # (stable: equal lengths keep their order, as the general path)
    refs = both_postings(lists[0], lists[1])  # native int64 bytes: no array per list
    for raw in lists[2:]:
        if not refs:
            break
        refs = in_postings(refs, raw)
    return np.frombuffer(refs, np.int64) if refs else EMPTY


MAX_KEY_MATCHER_CHARS = 256  # longest matchers an expanded postings entry is kept for
METRIC_NAME = "__name__"
NAME_RANGES_KEPT = 16  # metric names whose postings range a block keeps (BucketBlock._name_range)
_UNKNOWN = object()
_START = itemgetter(0)
_SECOND = itemgetter(1)
_NAME = attrgetter("name")
_VALUE = attrgetter("value")
# A MatchType's value: the member is a str holding it (``.value`` is two Python calls)
_TYPE_STR = str.__str__


def selection_id(matchers: Sequence[Matcher]) -> str:
    """Matchers as one string, each its type and its length-prefixed name and value (so no
    two lists give the same string): the expanded-postings cache key's part, as a string's
    hash is kept (a tuple of matchers is hashed again, a Python call per matcher, at every
    lookup and insert of every block's key)."""
    return "".join([f"{_TYPE_STR(m.type)}{len(m.name)}:{m.name}{len(m.value)}:{m.value}"
                    for m in matchers])


def matcher_chars(matchers: Sequence[Matcher]) -> int:
    """Characters of the matchers' names and values (a key's size, bounded for caching)."""
    return sum(map(len, map(_NAME, matchers))) + sum(map(len, map(_VALUE, matchers)))
SMALL_SELECTION = 64  # chunk metas below which list operations beat numpy's per-call cost
SMALL_ITEMS = 16  # items of one read below which lists beat numpy's per-call cost


def _relative(ms, gs: int, a: int, z: int, small: bool):
    """The starts ``ms[a:z]`` relative to their range's start ``gs`` (split_items's offsets)."""
    return array("q", [x - gs for x in ms[a:z]]) if small else \
        (ms[a:z] - gs).astype(np.int64, copy=False)


def _chunks_in_range(e: SeriesEntries, rng: tuple[int, int] | None
                     ) -> tuple[list[int], list[int], list[int], list[int], "np.ndarray | list[int]"]:
    """Of series entries ``e``, the chunks overlapping ``rng`` (None: all of them) as
    (indexes of series with any, chunk bounds per series (``n + 1``), mints, maxts,
    refs). A small selection (a few series, the typical dashboard panel) is done on
    lists: a dozen numpy calls would cost more than the data."""
    n = len(e.labels)
    if len(e.c_mint) > SMALL_SELECTION * 8:
        c_mint, c_maxt, c_ref, c_counts = (np.frombuffer(b, np.int64) for b in (
            e.c_mint, e.c_maxt, e.c_ref, e.chunk_counts))
        if rng is None:
            keep, counts = None, c_counts
        else:
            keep = (c_mint <= rng[1]) & (c_maxt >= rng[0])
            counts = np.bincount(np.repeat(np.arange(n), c_counts)[keep], minlength=n)
        sel = slice(None) if keep is None else keep
        return (counts.nonzero()[0].tolist(), [0, *counts.cumsum().tolist()],
                c_mint[sel].tolist(), c_maxt[sel].tolist(), c_ref[sel])
    # (four calls, not a comprehension: that is a function call of its own)
    mints = memoryview(e.c_mint).cast("q").tolist()
    maxts = memoryview(e.c_maxt).cast("q").tolist()
    refs = memoryview(e.c_ref).cast("q").tolist()
    counts = memoryview(e.chunk_counts).cast("q").tolist()
    if rng is None and n == 1:  # one series, all its chunks (a cold one-series block read)
        return ([0] if counts[0] else []), [0, counts[0]], mints, maxts, refs
    if rng is not None:
        lo, hi = rng
        kept = [mints[k] <= hi and maxts[k] >= lo for k in range(len(mints))]
        if not all(kept):
            at = 0
            for i, c in enumerate(counts):
                counts[i] = sum(kept[at:at + c])
                at += c
            mints, maxts, refs = (list(itertools.compress(x, kept))
                                  for x in (mints, maxts, refs))
    bounds = [0, *itertools.accumulate(counts)]
    return [i for i, c in enumerate(counts) if c], bounds, mints, maxts, refs


def _small_spans(starts: list[int], estimate: int, lo: int, hi: int
                 ) -> tuple[list[int], list[int]] | None:
    """(starts, ends) of a few items in [lo, hi), each assumed to end ``estimate`` bytes on,
    at the next item or at ``hi``, whichever comes first; None for a start outside."""
    if starts[0] < lo or starts[-1] >= hi:
        return None
    ends = [min(s + estimate, hi) for s in starts]
    for i in range(len(starts) - 1):
        ends[i] = min(ends[i], starts[i + 1])
    return starts, ends


def _segment_spans(block: BucketBlock, ids: list[int]
                   ) -> tuple[np.ndarray | list[int], np.ndarray | list[int]]:
    """The spans of chunk refs ``ids`` of one segment (BucketBlock.one_segment's, worked out
    only when its one-call plan does not serve)."""
    return block.chunk_segments(ids)[0][3]()


def chunk_ids(refs: np.ndarray | list[int]) -> tuple[list[int], bool]:
    """The sorted, distinct chunk refs of ``refs`` (a list taken as it is when already so),
    and whether ``refs`` was so (else records must be put back in its order)."""
    if isinstance(refs, list):
        if refs == sorted(set(refs)):  # (distinct and ascending)
            return refs, True
    elif len(refs) == 1 or bool((refs[1:] > refs[:-1]).all()):
        return refs.tolist(), True
    return np.unique(np.asarray(refs, dtype=np.int64)).tolist(), False


def _meta_sizes(meta: BlockMeta, under: str) -> dict[str, int]:
    """Sizes meta.json's ``thanos.files`` records for files under ``under`` ("" = all)."""
    return {f["rel_path"]: int(f["size_bytes"]) for f in (meta.thanos or {}).get("files") or []
            if f.get("size_bytes") and str(f.get("rel_path", "")).startswith(under)}


async def _segment_sizes(bucket: Bucket, meta: BlockMeta) -> dict[str, int]:
    """Actual sizes of the block's chunk segments (``chunks/NNNNNN`` -> bytes), from one
    attributes request each. A segment missing or of another size than meta.json records is
    a broken upload (e.g. a truncated file): CorruptionError."""
    recorded = _meta_sizes(meta, CHUNKS_DIRNAME + "/")
    if recorded:
        rels = sorted(recorded)
    else:  # no sizes recorded (e.g. a plain Prometheus block): whatever is there
        prefix = f"{meta.ulid}/"
        rels = [n[len(prefix):] for n in await bucket.iter(f"{prefix}{CHUNKS_DIRNAME}/")
                if not n.endswith("/")]
    try:
        attrs = await asyncio.gather(*(bucket.attributes(f"{meta.ulid}/{r}") for r in rels))
    except ObjectNotFound as e:
        raise CorruptionError(f"block {meta.ulid}: missing chunk segment: {e}") from None
    sizes = {r: a.size for r, a in zip(rels, attrs)}
    for rel, size in sizes.items():
        if rel in recorded and size != recorded[rel]:
            raise CorruptionError(f"block {meta.ulid}: {rel} has {size} bytes, meta.json "
                                  f"records {recorded[rel]}")
        if size < SEGMENT_HEADER_SIZE:
            raise CorruptionError(f"block {meta.ulid}: {rel} is too short for a chunk segment")
    return sizes


def merge_external(lbls: Labels, ext: Labels) -> Labels:
    """Series labels with the block's external labels added; external ones win on clashes."""
    if not ext:
        return lbls
    merged = dict(lbls)
    merged.update(ext)
    return tuple(sorted(merged.items()))


class BucketBlock:
    """Query access to one uploaded block; all I/O is ranged reads through ``bucket``."""

    def __init__(self, bucket: Bucket, meta: BlockMeta, header: IndexHeader, cache: LRUCache,
                 limit: asyncio.Semaphore, opts: FetchOptions,
                 metrics: FetchMetrics | None, seg_sizes: dict[str, int],
                 remote: RemoteIndexCache | None = None, budget: ByteBudget | None = None
                 ) -> None:
        self.bucket = bucket
        self._budget = budget  # bytes of fetched ranges held at once (the store's, shared)
        self._remote = remote  # shared postings/series cache behind the in-process LRU
        self.meta = meta
        self.min_time = meta.min_time  # the block's [min_time, max_time) (attributes: read
        self.max_time = meta.max_time  # for every block of every request)
        self.ulid = meta.ulid
        self.header = header
        self._cache = cache
        self._limit = limit
        self._opts = opts
        self._m = metrics
        thanos = meta.thanos or {}
        self.ext_labels: Labels = tuple(sorted((str(k), str(v)) for k, v in
                                               (thanos.get("labels") or {}).items() if v != ""))
        self._ext = dict(self.ext_labels)
        self.resolution = int((thanos.get("downsample") or {}).get("resolution", 0))
        self._index_name = self.index_name = f"{self.ulid}/{INDEX_FILENAME}"  # in the bucket
        self._seg_sizes = seg_sizes  # actual sizes: the bounds of every chunk ref
        # segment seq -> (name, object, item_reads arguments), real segments only
        self._segs: dict[int, tuple[str, str, SmallItems]] = {}
        self.skipped_chunks = 0  # chunks of unknown encodings left out of answers so far
        self._name_ranges: dict[str, tuple[int, int] | None] = {}  # see _name_range

    @classmethod
    async def open(cls, bucket: Bucket, meta: BlockMeta, local_dir: Path, cache: LRUCache,
                   limit: asyncio.Semaphore, opts: FetchOptions,
                   metrics: FetchMetrics | None = None,
                   remote: RemoteIndexCache | None = None, budget: ByteBudget | None = None
                   ) -> BucketBlock:
        """Load (or build from the bucket) the block's index-header under ``local_dir``, after
        checking the stored files against meta.json. Raises CorruptionError for a block that
        must not be served (a checksum or size that does not match)."""
        index_name = f"{meta.ulid}/{INDEX_FILENAME}"
        size = _meta_sizes(meta, "").get(INDEX_FILENAME)
        if size is None:
            size = (await bucket.attributes(index_name)).size
        seg_sizes = await _segment_sizes(bucket, meta)
        header, _ = await IndexHeader.load_or_fetch(bucket, index_name, size,
                                                    local_dir / HEADER_FILENAME)
        return cls(bucket, meta, header, cache, limit, opts, metrics, seg_sizes, remote, budget)

    async def verify_index(self) -> None:
        """Check every item of the whole index (CorruptionError if one fails)."""
        await verify_index(self.bucket, self._index_name, self.header, self._seg_sizes)

    # -- block-level filters

    def overlaps(self, mint: int, maxt: int) -> bool:
        """[min_time, max_time) of the block against the inclusive query range."""
        return self.meta.min_time <= maxt and self.meta.max_time > mint

    def index_matchers(self, matchers: Sequence[Matcher]) -> list[Matcher] | None:
        """Matchers left for the index once those on external labels are decided here; None
        when an external label rules the whole block out."""
        rest = []
        for m in matchers:
            v = self._ext.get(m.name)
            if v is None:
                rest.append(m)
            elif not m.matches(v):
                return None
        return rest

    # -- generic ranged item reads

    async def _read_items(self, obj: str, kind: str, ids: list[int], spans: Spans,
                          length_at: LengthAt) -> list[bytes]:
        """Raw bytes of items of object ``obj`` at the starts (sorted) ``spans()`` gives,
        each assumed to end by its end there (worked out only when something is not
        cached); cached under ``(block, kind, id)``. The items of each coalesced read are
        cut out in one C call (no Python work per item)."""
        keys = list(zip(repeat(self.ulid), repeat(kind), ids))
        out = self._cache.get_many(keys, kind)
        n_miss = out.count(None)
        if not n_miss:
            return out  # type: ignore[return-value]
        miss = list(range(len(out))) if n_miss == len(out) else \
            [j for j, v in enumerate(out) if v is None]
        starts, ends = spans()
        remote = self._remote if self._remote is not None and kind in self._remote.kinds \
            else None
        if remote is not None:
            miss = await self._from_remote(remote, kind, ids, keys, out, miss, length_at)
            if not miss:
                return out  # type: ignore[return-value]
        small = isinstance(starts, list)  # a few items: lists, no array work
        if len(miss) == len(starts):
            ms, me = starts, ends
        elif small:
            ms, me = [starts[j] for j in miss], [ends[j] for j in miss]
        else:
            ms, me = starts[miss], ends[miss]
        groups = coalesce(ms, me, self._opts.max_gap, self._opts.max_range)
        code = _ITEM_KINDS[kind]
        got: list[bytes | None] = []
        lens: list[np.ndarray] = []
        big = self._budget is not None and groups[-1][1] - groups[0][0] > BIG_READ
        if not big:
            bufs = await fetch_groups(self.bucket, obj, groups, self._limit)
            if self._m is not None:
                self._m.fetched(kind, len(groups), sum(map(len, bufs)))
            for (gs, _, a, z), buf in zip(groups, bufs):
                items, ln = split_items(buf, _relative(ms, gs, a, z, small), code)
                got += items
                lens.append(np.frombuffer(ln, np.int64))
        else:  # a big read: each range split as soon as it is in, within the store's budget
            for items, ln in await gather_eager([self._fetch_split(obj, kind, g, ms, small)
                                                 for g in groups]):
                got += items
                lens.append(np.frombuffer(ln, np.int64))
        if None in got:  # longer than estimated (or the object ended): read each exactly
            again = [k for k, v in enumerate(got) if v is None]
            glen = np.concatenate(lens)
            raws = await asyncio.gather(*(
                self._read_exact(obj, kind, int(ms[k]), int(glen[k]) if glen[k] >= 0 else None,
                                 length_at) for k in again))
            for k, raw in zip(again, raws):
                got[k] = raw
        if kind == "postings":  # checked once, as read (see _check_postings)
            deque(map(_check_postings, got), maxlen=0)  # type: ignore[arg-type]
        if len(miss) == len(out):
            out = got
            new_keys = keys
        else:
            deque(map(out.__setitem__, miss, got), maxlen=0)
            new_keys = list(map(keys.__getitem__, miss))
        if not (big and kind == "chunks"):  # (see BIG_READ)
            self._cache.put_many(new_keys, got, kind)  # type: ignore[arg-type]
        if remote is not None:
            for j in miss:
                remote.store(self.ulid, kind, ids[j], out[j])
        return out  # type: ignore[return-value]

    async def _fetch_split(self, obj: str, kind: str, group: Group, ms, small: bool
                           ) -> tuple[list[bytes | None], bytes]:
        """The items of one coalesced range of a big read (split_items's answer), the range
        fetched within the store's ByteBudget and given back once split."""
        assert self._budget is not None
        gs, ge, a, z = group
        held = await self._budget.acquire(ge - gs)
        try:
            buf = (await fetch_groups(self.bucket, obj, [group], self._limit))[0]
            if self._m is not None:
                self._m.fetched(kind, 1, len(buf))
            return split_items(buf, _relative(ms, gs, a, z, small), _ITEM_KINDS[kind])
        finally:
            self._budget.release(held)

    async def _from_remote(self, remote: RemoteIndexCache, kind: str, ids: list[int],
                           keys: list, out: list, miss: list[int], length_at: LengthAt
                           ) -> list[int]:
        """Fill ``out`` from the shared cache; the indexes still missing. A value that is not
        one whole item with a matching checksum is a miss (it must never reach the decoders,
        which would take the block out of service)."""
        found = await remote.fetch(self.ulid, kind, [ids[j] for j in miss])
        body = 4 if kind == "postings" else None
        left, hit = [], []
        for j, v in zip(miss, found):
            if v is not None and _item_intact(v, length_at, body):
                out[j] = v
                hit.append(j)
            else:
                left.append(j)
        self._cache.put_many([keys[j] for j in hit], [out[j] for j in hit], kind)
        return left

    async def _read_exact(self, obj: str, kind: str, off: int, ln: int | None,
                          length_at: LengthAt) -> bytes:
        if self._m is not None:
            self._m.refetches.labels(kind).inc()
        async with self._limit:
            if ln is None:
                head = await self.bucket.get_range(obj, off, 16)
                ln = length_at(memoryview(head), 0)
                if ln is None:
                    raise CorruptionError(f"{obj}: item at {off} has no valid length prefix")
            raw = await self.bucket.get_range(obj, off, ln)
        if self._m is not None:
            self._m.fetched(kind, 1, len(raw))
        if len(raw) != ln:
            raise CorruptionError(f"{obj}: item at {off} runs past the end of the object")
        return raw

    # -- postings

    async def _postings(self, ranges: list[tuple[int, int]]) -> dict[int, bytes]:
        """Checked raw postings lists by their start offset (``ranges`` sorted, no
        repeats)."""
        uniq = ranges
        if not uniq:
            return {}
        ids = [r[0] for r in uniq]

        def spans() -> tuple[np.ndarray, np.ndarray]:  # worked out only on a cache miss
            return np.array(ids, dtype=np.int64), np.array([r[1] for r in uniq], dtype=np.int64)
        raws = await self._read_items(self._index_name, "postings", ids, spans, _postings_len)
        return dict(zip(ids, raws))

    def selection_key(self, matchers: Sequence[Matcher] | str) -> tuple:
        """The cache key of the series refs ``select`` gives for ``matchers`` (or their
        selection_id)."""
        return (self.ulid, "expanded_postings",
                matchers if isinstance(matchers, str) else selection_id(matchers))

    def selection_kept(self, matchers: Sequence[Matcher], refs: np.ndarray,
                       short: bool | None = None) -> bytes | None:
        """What the cache keeps of a selection's refs, or None when it keeps nothing:
        uint32 (series refs are index offsets / 16, and an index is at most 64 GiB), and
        no entry bigger than a small part of the budget: a broad selection over a huge
        block must not flush the cache (its postings lists are cached anyway). The key's
        matchers are not counted against the budget, so long ones (big regexes) are not
        kept at all (``short``: whether they are short enough, when already known)."""
        if short is None:
            short = matcher_chars(matchers) <= MAX_KEY_MATCHER_CHARS
        if not short or len(refs) * 4 > self._cache.max_bytes // 64:
            return None
        if len(refs) <= SMALL_ITEMS:  # a few refs (a one-series selection): no numpy calls
            ids = refs.tolist()
            return array("I", ids).tobytes() if not ids or ids[-1] <= 0xFFFFFFFF else None
        return refs.astype(np.uint32).tobytes() if refs[-1] <= 0xFFFFFFFF else None

    async def select(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Sorted series refs matching all ``matchers`` (an absent label matches as ""),
        kept in the cache by matchers (Thanos's expanded postings): a repeated selection
        costs one lookup, no postings list decoded or intersected again."""
        key = self.selection_key(matchers)
        hit = self._cache.get_all([key], "expanded_postings")
        if hit is not None:
            return np.frombuffer(hit[0], np.uint32)
        refs = await self._expand_postings(matchers)
        kept = self.selection_kept(matchers, refs)
        if kept is not None:
            self._cache.put_many([key], [kept], "expanded_postings")
        return refs

    def postings_plan(self, matchers: Sequence[Matcher]) -> PostingsPlan | None:
        """The postings lists (index ranges) a selection reads, from the index-header alone;
        None when it needs no read at all (a label value nothing has)."""
        h = self.header
        plans: list[tuple[Matcher, list[tuple[int, int]]]] = []
        narrowing: list[list[tuple[int, int]]] = []
        single = True
        for m in matchers:
            eq = m.type is MatchType.EQ
            if not (eq and m.value) and m.matches_empty():  # (`="v"` never matches "")
                single = False
                rngs = [(s, e) for _, s, e in h.postings_ranges(m.name,
                                                              lambda v, m=m: not m.matches(v))]
            elif eq:
                if m.name == METRIC_NAME:  # (a kept name's range without a method call)
                    r = self._name_ranges.get(m.value, _UNKNOWN)
                    if r is _UNKNOWN:
                        r = self._name_range(m.value)
                else:
                    r = h.postings_range(m.name, m.value)
                if r is None:
                    return None  # nothing has this label value: no reads at all
                rngs = [r]
                narrowing.append(rngs)
            else:
                rngs = [(s, e) for _, s, e in h.postings_ranges(m.name, m.matches)]
                if not rngs:
                    return None
                if len(rngs) > 1:
                    single = False
                narrowing.append(rngs)
            plans.append((m, rngs))
        need_all = not narrowing
        # all series' list: needed only when no matcher narrows (the others sort first)
        all_rng = h.postings_range("", "") if need_all else None
        wanted = list(itertools.chain.from_iterable(map(_SECOND, plans)))
        if need_all:
            if all_rng is None:
                return None
            wanted.append(all_rng)
        return _new_plan((plans, all_rng, sorted(set(wanted)) if len(wanted) > 1 else wanted,
                          narrowing, single, False))

    def eq_plan(self, matchers: Sequence[Matcher], names: list[str], values: list[bytes]
                ) -> PostingsPlan | None:
        """``postings_plan`` of equality matchers with non-empty values (``names`` and
        ``values`` (UTF-8) theirs), the lists looked up in one call."""
        rs = self.header.eq_ranges(names, values)
        if rs is None:
            return None
        narrowing = list(map(list, zip(rs)))  # ([r] for each r)
        in_order = len(rs) == 1 or (rs == sorted(rs) and len(set(rs)) == len(rs))
        return _new_plan((list(zip(matchers, narrowing)), None,
                          rs if in_order else sorted(set(rs)), narrowing, True, in_order))

    def _name_range(self, name: str) -> tuple[int, int] | None:
        """The postings range of metric ``name`` (as IndexHeader.postings_range), the last
        few names asked kept: every query of a dashboard's metric looks its name up again in
        every block (a binary search over the mapped offset table, cold in the CPU caches)."""
        r = self._name_ranges.get(name, _UNKNOWN)
        if r is _UNKNOWN:
            r = self.header.postings_range(METRIC_NAME, name)
            if len(self._name_ranges) >= NAME_RANGES_KEPT:
                self._name_ranges.clear()
            self._name_ranges[name] = r
        return r  # type: ignore[return-value]

    async def _expand_postings(self, matchers: Sequence[Matcher]) -> np.ndarray:
        plan = self.postings_plan(matchers)
        if plan is None:
            return EMPTY
        return combine_postings(plan, await self._postings(plan.ranges))

    # -- series entries and chunks

    async def series_entries(self, refs: np.ndarray) -> SeriesEntries:
        """Labels (without external labels) and chunk metas of each series ref (sorted), as
        flat arrays decoded in one C call per block."""
        if len(refs) == 0:
            return SeriesEntries([], b"", b"", b"", b"")
        raws = await self._read_items(self._index_name, "series", refs.tolist(),
                                      lambda: self._series_spans(refs), _series_len)
        return self.decoded_entries(raws)

    def decoded_entries(self, raws: list[bytes]) -> SeriesEntries:
        """Series entries from their raw bytes (CorruptionError for a malformed one)."""
        h = self.header
        try:
            lc, syms, cc, c_mint, c_maxt, c_ref = decode_series_batch(raws)
        except ValueError as e:
            raise CorruptionError(f"block {self.ulid}: {e}") from None
        return _new_entries((h.label_sets(lc, syms), cc, c_mint, c_maxt, c_ref))

    def _series_spans(self, refs: np.ndarray
                      ) -> tuple[np.ndarray | list[int], np.ndarray | list[int]]:
        """Estimated index ranges of the series entries at sorted ``refs`` (each up to the
        next one or the size estimate), checked against the series section; as lists for a
        few refs (no array work)."""
        h = self.header
        if len(refs) <= SMALL_ITEMS:
            got = _small_spans([r * SERIES_ALIGN for r in refs.tolist()],
                               self._opts.series_estimate, h.toc.series, h.series_end)
            if got is None:
                raise CorruptionError(f"block {self.ulid}: series ref outside the series section")
            return got
        starts = refs.astype(np.int64) * SERIES_ALIGN
        if starts[0] < h.toc.series or starts[-1] >= h.series_end:
            raise CorruptionError(f"block {self.ulid}: series ref outside the series section")
        ends = np.minimum(starts + self._opts.series_estimate, h.series_end)
        np.minimum(ends[:-1], starts[1:], out=ends[:-1])
        return starts, ends

    def _chunk_refetches(self, limits: RequestLimiter, est: Estimates, lengths: list[int]) -> None:
        """Thanos's last reservations: the chunks (data ``lengths``) it fetches again."""
        limits.replay(self.ulid, [("chunks", n) for n in chunk_refetches(np.array(lengths), est)])

    async def _entry_lengths(self, refs: np.ndarray) -> np.ndarray:
        """Lengths (length uvarint and payload, no CRC) of the series entries at sorted
        ``refs``, just read (so normally cached)."""
        if len(refs) == 0:
            return np.zeros(0, np.int64)
        raws = await self._read_items(self._index_name, "series", refs.tolist(),
                                      lambda: self._series_spans(refs), _series_len)
        return np.fromiter(map(len, raws), dtype=np.int64, count=len(raws)) - 4

    def _postings_bytes(self, ms) -> int:
        """Bytes of the postings lists of matchers ``ms`` a request will fetch, known before
        it reads (Thanos's downloaded-bytes limit reserves them first): the lists' entries
        (no length or CRC), read in merged ranges."""
        plan = self.postings_plan(ms)
        if plan is None or not plan.ranges:
            return 0
        rng = np.array(plan.ranges, dtype=np.int64)
        return sum(g[1] - g[0] for g in coalesce(rng[:, 0] + 4, rng[:, 1] - 4,
                                                  self._opts.max_gap))

    def _typed(self, encs: bytes, datas: list[bytes]) -> list[bytes | EncodedChunk | None]:
        """Chunk data as served: XOR chunks as bytes, native histogram chunks as EncodedChunk
        (so the StoreAPI server sends them as Chunk.HISTOGRAM/FLOAT_HISTOGRAM, as the
        ingestor's do); None for any other encoding (counted as skipped)."""
        if encs.count(ENCODING_XOR) == len(encs):
            return datas  # type: ignore[return-value]
        out: list[bytes | EncodedChunk | None] = []
        for enc, data in zip(encs, datas):
            if enc == ENCODING_XOR:
                out.append(data)
            elif enc in _HISTOGRAM_ENCODINGS:
                out.append(EncodedChunk(data, enc))
            else:
                out.append(None)
        skipped = out.count(None)
        self.skipped_chunks += skipped
        if skipped and self._m is not None:
            self._m.skipped_chunks.inc(skipped)
        return out

    async def stored_chunks(self, refs: Sequence[int] | np.ndarray
                            ) -> dict[int, tuple[int, bytes]]:
        """(encoding byte, data) by chunk ref, any encoding (downsampled blocks hold 0xff
        aggregate chunks)."""
        arr = np.unique(np.asarray(refs, dtype=np.uint64)).astype(np.int64)
        encs, datas = await self.chunk_records(arr)
        return dict(zip(arr.tolist(), zip(encs, datas)))

    async def chunk_records(self, refs: np.ndarray | list[int]) -> tuple[bytes, list[bytes]]:
        """Encoding byte and data of the chunk at each of ``refs`` (in the order given), read
        in as few ranged reads as the cache leaves and checked in one C call -- no Python
        call or tuple per chunk. A list (a small selection's) is taken as it is."""
        if len(refs) == 0:
            return b"", []
        ids, ordered = chunk_ids(refs)
        raws = self._cache.get_all(list(zip(repeat(self.ulid), repeat("chunks"), ids)),
                                   "chunks")
        if raws is None:  # something to read: per segment file
            raws = list(itertools.chain.from_iterable(await gather_eager([
                self._read_items(obj, "chunks", ids[a:z], spans, _chunk_len)
                for obj, a, z, spans, _ in self.chunk_segments(ids)])))
        return self.checked_chunks(raws, refs, ids, ordered)

    def checked_chunks(self, raws: list[bytes], refs: np.ndarray | list[int], ids: list[int],
                       ordered: bool) -> tuple[bytes, list[bytes]]:
        """``chunk_records``'s answer from the raw records at ``ids`` (chunk_ids of refs)."""
        try:
            encs, datas = read_chunks(raws)
        except ValueError as err:
            raise CorruptionError(f"block {self.ulid}: chunks: {err}") from None
        if not ordered:
            arr = np.array(ids, dtype=np.int64)
            pos = np.searchsorted(arr, np.asarray(refs, dtype=np.int64))
            encs = np.frombuffer(encs, np.uint8)[pos].tobytes()
            datas = [datas[i] for i in pos.tolist()]
        return encs, datas

    def series_small(self, refs: np.ndarray) -> SmallItems | None:
        """The series entries at ``refs`` as item_reads takes them, for a few refs; else None
        (``_series_spans`` works them out)."""
        if len(refs) > SMALL_ITEMS:
            return None
        h = self.header
        return (ALL_BITS, SERIES_ALIGN, self._opts.series_estimate, h.toc.series, h.series_end)

    def chunk_segments(self, ids: list[int]
                       ) -> list[tuple[str, int, int, Spans, SmallItems | None]]:
        """The chunk segments the sorted chunk refs ``ids`` lie in, as (object, first index,
        last index + 1, spans of those refs, and for a few refs their item_reads arguments
        when the segment is known), each segment's refs checked against its size
        (CorruptionError) when its spans are worked out (only for a cache miss)."""
        small = len(ids) <= SMALL_ITEMS  # a few chunks (one series): lists, no array work
        if small:
            offs: list[int] | np.ndarray = ids  # (the offsets are taken from them in spans)
            if ids[0] >> 32 == ids[-1] >> 32:  # (sorted) all in one segment: the usual
                seqs: list[int] | np.ndarray = [ids[0] >> 32]
                cuts = [0, len(ids)]
            else:
                seqs = [i >> 32 for i in ids]
                cuts = [0, *(i for i in range(1, len(ids)) if seqs[i] != seqs[i - 1]),
                        len(ids)]
        else:
            arr = np.array(ids, dtype=np.int64)
            seqs = arr >> 32
            offs = arr & 0xFFFFFFFF
            cuts = [0, *(np.flatnonzero(seqs[1:] != seqs[:-1]) + 1).tolist(), len(arr)]
        est = self._opts.chunk_estimate
        out = []
        for a, z in zip(cuts[:-1], cuts[1:]):
            rel, obj, args = self._segment(int(seqs[a]))

            def spans(o=offs[a:z], rel=rel, a=a, z=z
                      ) -> tuple[np.ndarray | list[int], np.ndarray | list[int]]:
                size = self._seg_sizes.get(rel)
                if size is None:
                    raise CorruptionError(self._outside(ids[a], ids[z - 1], rel, size))
                got = _small_spans([i & 0xFFFFFFFF for i in o], est,  # type: ignore[union-attr]
                                   SEGMENT_HEADER_SIZE, size) if small else None
                if got is not None:
                    return got
                if small or o[0] < SEGMENT_HEADER_SIZE or o[-1] >= size:
                    raise CorruptionError(self._outside(ids[a], ids[z - 1], rel, size))
                ends = np.minimum(o + est, size)
                np.minimum(ends[:-1], o[1:], out=ends[:-1])
                return o, ends
            out.append((obj, a, z, spans, args if small else None))
        return out

    def _segment(self, seq: int) -> tuple[str, str, SmallItems | None]:
        """Chunk segment ``seq``'s name, object and item_reads arguments (None when the
        block has no such segment), kept for the block's real segments."""
        got = self._segs.get(seq)
        if got is not None:
            return got
        rel = f"{CHUNKS_DIRNAME}/{segment_name(seq)}"
        size = self._seg_sizes.get(rel)
        if size is None:
            return rel, f"{self.ulid}/{rel}", None
        got = self._segs[seq] = (rel, f"{self.ulid}/{rel}",
                                 (0xFFFFFFFF, 1, self._opts.chunk_estimate, SEGMENT_HEADER_SIZE,
                                  size))
        return got

    def one_segment(self, ids: list[int]) -> tuple[str, Spans, SmallItems] | None:
        """``chunk_segments(ids)``'s one segment (object, spans, item_reads arguments) when
        the few sorted chunk refs ``ids`` all lie in one real segment (a one-series
        selection's, the usual), without working out cuts; else None."""
        if len(ids) > SMALL_ITEMS or ids[0] >> 32 != ids[-1] >> 32:
            return None
        seq = ids[0] >> 32
        _, obj, args = self._segs.get(seq) or self._segment(seq)
        if args is None:
            return None
        return obj, partial(_segment_spans, self, ids), args

    def _outside(self, first: int, last: int, rel: str, size: int | None) -> str:
        return (f"block {self.ulid}: chunk ref {first:#x}..{last:#x} outside segment {rel} "
                f"({size} bytes)")

    def _aggr_data(self, data: bytes, aggregates: Sequence[int]) -> AggrData:
        """The requested aggregates (storeapi Aggr numbers; none = all) of an aggr chunk."""
        try:
            ac = AggrChunk.decode(data)
        except ValueError as e:
            raise CorruptionError(f"block {self.ulid}: {e}") from None
        want = {_AGGR_FROM_PB[a] for a in aggregates if a in _AGGR_FROM_PB} or set(range(5))
        return AggrData(*(ac.get(i) if i in want else None for i in range(5)))

    # -- queries

    async def series(self, mint: int, maxt: int, matchers: Sequence[Matcher],
                     skip_chunks: bool, aggregates: Sequence[int] = (),
                     refs: np.ndarray | None = None, limits: RequestLimiter | None = None
                     ) -> list[tuple[Labels, list[Chunk]]]:
        """Matching series (external labels merged in) with their chunks overlapping
        [mint, maxt]; with ``skip_chunks`` the chunk lists are empty. A raw block's native
        histogram chunks come as EncodedChunk (the server sends their Chunk.type); a
        downsampled block's chunks carry an AggrData (the requested ``aggregates``).
        ``refs``: what ``select`` already gave for these matchers; ``limits`` counts the
        matched series and the chunks in range before they are read."""
        if not self.overlaps(mint, maxt):
            return []
        ms = self.index_matchers(matchers)
        if ms is None:
            return []
        counts_bytes = limits is not None and limits.counts_bytes
        if refs is None:
            if counts_bytes:
                limits.read_bytes(self.ulid, "postings", self._postings_bytes(ms))
            refs = await self.select(ms)
        if limits is not None:
            limits.touched_series(self.ulid, len(refs))
            if counts_bytes:  # Thanos's first read of series entries, reserved before it
                est = Estimates.of_block(self.meta.thanos)
                read = limits.capped(len(refs))  # Thanos reads no more than the request's limit
                plan = SeriesPlan.of(refs[:read], est)
                limits.read_bytes(self.ulid, "series", plan.first)
        e = await self.series_entries(refs)
        whole = mint <= self.min_time and maxt >= self.max_time - 1
        picked, bounds, mints, maxts, c_refs = _chunks_in_range(
            e, None if whole else (mint, maxt))
        if limits is not None and not skip_chunks:
            limits.chunks(self.ulid, bounds)
        if counts_bytes:  # the rest of Thanos's reservations up to its chunk reads
            limits.replay(self.ulid, plan.reservations(
                await self._entry_lengths(refs[plan.last_refs()]),
                [] if skip_chunks else chunk_reservations(c_refs, bounds[:read + 1], est)))
        ext = self.ext_labels
        if skip_chunks:
            return [(merge_external(e.labels[i], ext), []) for i in picked]
        if self.resolution:
            refl = list(c_refs)
            stored = await self.stored_chunks(refl)
            if counts_bytes:
                self._chunk_refetches(limits, est, [len(stored[r][1]) for r in refl[:bounds[read]]])
            out = []
            for i in picked:
                a, z = bounds[i], bounds[i + 1]
                cs = [(mints[k], maxts[k], self._aggr_data(stored[refl[k]][1], aggregates))
                      for k in range(a, z) if stored[refl[k]][0] == ENCODING_AGGR]
                if cs:
                    out.append((merge_external(e.labels[i], ext), cs))
            return out
        encs, raw = await self.chunk_records(c_refs)
        if counts_bytes:
            self._chunk_refetches(limits, est, list(map(len, raw[:bounds[read]])))
        datas = self._typed(encs, raw)
        return self.answer(e.labels, picked, bounds, mints, maxts, datas)

    def answer(self, labels: list[Labels], picked: list[int], bounds: list[int],
               mints: list[int], maxts: list[int], datas: list
               ) -> list[tuple[Labels, list[Chunk]]]:
        """A raw block's series (external labels merged in) with their chunks, from
        _chunks_in_range's ``picked``/``bounds``/times and the chunks' served data (None:
        left out)."""
        ext = self.ext_labels
        out = []
        if None in datas:
            for i in picked:
                a, z = bounds[i], bounds[i + 1]
                cs = [(mints[k], maxts[k], datas[k]) for k in range(a, z)
                      if datas[k] is not None]
                if cs:
                    out.append((merge_external(labels[i], ext), cs))
            return out
        chunks = chunk_tuples(mints, maxts, datas)  # list(zip(...)), left out of GC walks
        if len(labels) == 1:  # one series (bounds [0, len(chunks)]): its chunks as they are
            return [(merge_external(labels[0], ext) if ext else labels[0], chunks)] \
                if picked else []
        if ext:
            return [(merge_external(labels[i], ext), chunks[bounds[i]:bounds[i + 1]])
                    for i in picked]
        per_series = list(map(chunks.__getitem__, map(slice, bounds[:-1], bounds[1:])))
        if len(picked) == len(labels):  # every series has chunks: no Python loop per series
            return list(zip(labels, per_series))
        return [(labels[i], per_series[i]) for i in picked]

    async def label_names(self, mint: int, maxt: int, matchers: Sequence[Matcher],
                          limits: RequestLimiter | None = None) -> set[str]:
        if not self.overlaps(mint, maxt):
            return set()
        ms = self.index_matchers(matchers)
        if ms is None:
            return set()
        if not ms:
            return set(self.header.label_names()) | set(self._ext)
        return {n for lbls, _ in await self.series(mint, maxt, ms, True, limits=limits)
                for n, _ in lbls}

    async def label_values(self, name: str, mint: int, maxt: int, matchers: Sequence[Matcher],
                           limits: RequestLimiter | None = None) -> set[str]:
        if not self.overlaps(mint, maxt):
            return set()
        ms = self.index_matchers(matchers)
        if ms is None:
            return set()
        if name in self._ext:
            if ms and not await self.series(mint, maxt, ms, True, limits=limits):
                return set()
            return {self._ext[name]}
        if not ms:
            return set(self.header.label_values(name))
        return {v for lbls, _ in await self.series(mint, maxt, ms, True, limits=limits)
                for n, v in lbls if n == name}
