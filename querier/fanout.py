"""The querier's view of its stores: fan a select out to every StoreAPI endpoint and merge.

The PromQL engine runs in a worker thread and asks for data synchronously; the StoreAPI clients
live on the event loop, so a select hops onto the loop, gathers every endpoint concurrently, and
decodes the returned XOR chunks in C.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import operator
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from common.eagerstep import current_task
from common.tls import ClientTLS
from querier.dedup import chain, penalty, strip_labels
from querier.downsampled import aggrs_from_func, max_resolution_for, series_samples
from querier.promql import PromQLError, Series
from querier.promql.types import SeriesBatch, SeriesParts
from receiver.tsdb.chunkenc import decode_many, decode_series
from receiver.tsdb.histogram import ENCODING_XOR, chunk_encoding, decode_chunk, to_engine
from receiver.tsdb.labels import STALE_NAN_BITS, Labels, Matcher
from storeapi.client import StoreClient, chunk_count
from storeapi.grpcmetrics import client_metrics

from .endpoints import EndpointHealth, HealthOptions, Info, describe_error, is_connection_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectOptions:
    """Per-request read options: deduplication, partial responses, the enforced tenant."""

    replica_labels: tuple[str, ...] = ()       # empty: no deduplication
    dedup_func: str = "chain"
    partial_response: bool = False
    extra_matchers: tuple[Matcher, ...] = ()   # e.g. tenant_id="<tenant>" under enforcement
    counter: bool = False                      # penalty dedup: adjust counter resets at switches
    max_resolution_ms: int = 0                 # > 0: downsampled data this coarse may be read
    tenant: str = ""                           # sent to the stores as thanos-tenant ("": none)


DEFAULT_OPTIONS = SelectOptions()


_NO_INFO = Info(0, 0, [])


class StoreUnavailable(RuntimeError):
    """An endpoint failed and partial responses are not allowed."""


UNBOUNDED = (-(1 << 63), (1 << 63) - 1)
COUNTER_FUNCS = frozenset({"rate", "increase", "irate", "resets"})
TIMEOUT_MSG = "query timed out in expression evaluation"


def store_may_match(info: Info | None, mint: int, maxt: int, matchers: Sequence[Matcher]) -> bool:
    """Thanos's store selection: skip a store whose time range or external labels rule it out.
    An unknown store (no Info yet, or Info failed) is always asked."""
    if info is None:
        return True
    if info.max_time < mint or info.min_time > maxt:
        return False
    if not info.label_sets:
        return True
    for ls in info.label_sets:
        ext = dict(ls)
        if not any(map(ext.__contains__, map(_NAME, matchers))):
            return True  # no matcher on an external label (the usual query): no generator
        if all(m.matches(ext[m.name]) for m in matchers if m.name in ext):
            return True
    return False


_NAME = operator.attrgetter("name")


class StoreSet:
    """Clients for the configured ``--endpoint`` addresses. Each endpoint's health and Info
    (see querier.endpoints) decide whether a query asks it: only stores whose time range and
    external labels can match, and none known to be down."""

    def __init__(self, addresses: Sequence[str], timeout_s: float = 120.0,
                 registry: CollectorRegistry | None = None,
                 health: HealthOptions = HealthOptions(), response_timeout_s: float = 0.0,
                 strict: Sequence[str] = (), tls: ClientTLS | None = None) -> None:
        self.timeout_s = timeout_s
        self.tls = tls  # --grpc-client-tls-*
        self.response_timeout_s = response_timeout_s  # > 0: a slower store is dropped
        self.strict = frozenset(strict)  # --endpoint-strict: asked even while down
        self.metrics = client_metrics(registry)  # grpc_client_*
        self.clients = [StoreClient(a, timeout_s=timeout_s, native_histograms=True, tls=tls,
                                    metrics=self.metrics)
                        for a in dict.fromkeys(addresses)]
        self.health = EndpointHealth(self.clients, health, registry)

    async def start(self) -> None:
        self.health.start()

    async def set_addresses(self, addresses: Sequence[str]) -> None:
        """Use exactly these endpoints from now on (file SD): new ones get a client, dropped
        ones are closed; queries already running keep the clients they picked."""
        wanted = list(dict.fromkeys(addresses))
        have = {c.address: c for c in self.clients}
        gone = [c for a, c in have.items() if a not in wanted]
        self.clients = [have.get(a) or StoreClient(a, timeout_s=self.timeout_s,
                                                   native_histograms=True, tls=self.tls,
                                                   metrics=self.metrics)
                        for a in wanted]
        self.health.set_clients(self.clients)
        for c in gone:
            await c.close()

    def info_of(self, address: str) -> Info | None:
        st = self.health.status.get(address)
        return st.info if st is not None else None

    async def select_clients(self, mint: int, maxt: int, matchers: Sequence[Matcher]) -> list[StoreClient]:
        """The endpoints a query over this range would ask; endpoints never checked yet are
        asked for their Info first."""
        unchecked = [c for c in self.clients if self.health.status[c.address].up is None]
        if unchecked:
            await asyncio.gather(*(self.health.check(c) for c in unchecked))
        return self._targets(mint, maxt, matchers)[0]

    def _targets(self, mint: int, maxt: int, matchers: Sequence[Matcher],
                 serves: Callable[[Info | None], bool] | None = None
                 ) -> tuple[list[StoreClient], list[StoreClient]]:
        """(endpoints to ask, endpoints that may hold matching data but are down);
        ``serves``: only endpoints whose Info (None: not known yet) it accepts."""
        live, down = [], []
        for c in self.clients:
            st = self.health.status[c.address]
            if serves is not None and not serves(st.info):
                continue
            if store_may_match(st.info, mint, maxt, matchers):
                (down if st.up is False and c.address not in self.strict else live).append(c)
        return live, down

    async def _fan(self, mint: int, maxt: int, matchers: Sequence[Matcher], call,
                   opts: SelectOptions, warnings: list[str] | None,
                   serves: Callable[[Info | None], bool] | None = None) -> list:
        """``call(client)`` on every endpoint that may hold matching data, concurrently.

        A failed or down endpoint fails the request (StoreUnavailable), or with partial
        responses becomes a warning naming it; a connection failure also marks it down."""
        live, down = self._targets(mint, maxt, matchers, serves)
        if len(live) == 1 and not down and self.response_timeout_s <= 0:
            # the usual: one endpoint, none down, awaited here (no Task); its result taken
            # without the loop over results below, which its failure goes through
            failed: list[tuple[str, str]] = []
            one = call(live[0])  # (raising here is not the endpoint's failure)
            try:
                return [await one]
            except Exception as e:  # noqa: BLE001 -- as gather(return_exceptions=True)
                results = [e]
        else:
            results, failed = await self._gathered(live, down, call)
        out = []
        for c, r in zip(live, results):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                if is_connection_error(r):
                    self.health.mark_down(c.address, r)
                failed.append((c.address, describe_error(r)))
                continue
            out.append(r)
        for address, err in failed:
            msg = f"endpoint {address}: {err}"
            if not opts.partial_response:
                raise StoreUnavailable(msg)
            if warnings is not None:
                warnings.append(msg)
        return out

    async def _gathered(self, live: list[StoreClient], down: list[StoreClient], call
                        ) -> tuple[list, list[tuple[str, str]]]:
        """``call(client)`` on every ``live`` endpoint (each within --store.response-timeout),
        results or exceptions in order; and the ``down`` endpoints' (address, last error)."""
        # (no comprehension when none is down: each is a call on 3.11)
        failed = ([(c.address, self.health.status[c.address].last_error) for c in down]
                  if down else [])
        calls = list(map(call, live))
        if self.response_timeout_s > 0:
            calls = [asyncio.wait_for(c, self.response_timeout_s) for c in calls]
        if len(calls) == 1:  # one endpoint: awaited here, no Task for it
            try:
                results = [await calls[0]]
            except Exception as e:  # noqa: BLE001 -- as gather(return_exceptions=True)
                results = [e]
        else:
            results = await asyncio.gather(*calls, return_exceptions=True)
        return results, failed

    async def series(self, mint: int, maxt: int, matchers: list[Matcher], skip_chunks: bool = False,
                     opts: SelectOptions = DEFAULT_OPTIONS, warnings: list[str] | None = None,
                     limit: int = 0, until: float | None = None):
        """``limit`` (0: none) asks each store for at most that many series; ``until`` (a loop
        time) ends every call still running then, as an endpoint failure (DEADLINE_EXCEEDED)."""
        ms = list(matchers) + list(opts.extra_matchers)
        # (a methodcaller, not a lambda: no Python frame of its own per store)
        results = await self._fan(mint, maxt, ms, operator.methodcaller(
            "series_with_warnings", mint, maxt, ms, skip_chunks=skip_chunks,
            without_replica_labels=opts.replica_labels, limit=limit,
            partial_response=opts.partial_response, until=until, tenant=opts.tenant),
            opts, warnings)
        out = []
        strip = frozenset(opts.replica_labels)
        for r in results:
            if warnings is not None:
                warnings.extend(r.warnings)
            if strip:  # stores that do not strip replica labels themselves
                for s in r.series:
                    if any(n in strip for n, _ in s.labels):
                        s.labels = strip_labels(s.labels, strip)
            out.extend(r.series)
        return out

    async def series_downsampled(self, mint: int, maxt: int, matchers: list[Matcher], res_ms: int,
                                 aggrs: list[int], opts: SelectOptions,
                                 warnings: list[str] | None = None):
        """Series at the coarsest resolution <= ``res_ms`` each store has, as (labels, chunks)
        where chunks are raw XOR bytes or aggregates (Thanos's max_resolution_window)."""
        ms = list(matchers) + list(opts.extra_matchers)
        results = await self._fan(mint, maxt, ms, lambda c: c.series_aggr(
            mint, maxt, ms, res_ms, aggrs, without_replica_labels=opts.replica_labels,
            partial_response=opts.partial_response, tenant=opts.tenant), opts, warnings)
        out = []
        strip = frozenset(opts.replica_labels)
        for series, warns in results:
            if warnings is not None:
                warnings.extend(warns)
            for s in series:
                lbls = strip_labels(s.labels, strip) if strip else s.labels
                out.append((lbls, s.chunks))
        return out

    async def label_names(self, mint: int, maxt: int, matchers: list[Matcher],
                          opts: SelectOptions = DEFAULT_OPTIONS,
                          warnings: list[str] | None = None) -> list[str]:
        ms = list(matchers) + list(opts.extra_matchers)
        results = await self._fan(mint, maxt, ms, lambda c: c.label_names(
            mint, maxt, ms, partial_response=opts.partial_response, tenant=opts.tenant),
            opts, warnings)
        names = set().union(*results) if results else set()
        return sorted(names - set(opts.replica_labels))

    async def label_values(self, name: str, mint: int, maxt: int, matchers: list[Matcher],
                           opts: SelectOptions = DEFAULT_OPTIONS,
                           warnings: list[str] | None = None) -> list[str]:
        if name in opts.replica_labels:
            return []
        ms = list(matchers) + list(opts.extra_matchers)
        results = await self._fan(mint, maxt, ms, lambda c: c.label_values(
            name, mint, maxt, ms, partial_response=opts.partial_response, tenant=opts.tenant),
            opts, warnings)
        return sorted(set().union(*results)) if results else []

    async def metric_metadata(self, metric: str, limit: int, opts: SelectOptions = DEFAULT_OPTIONS,
                              warnings: list[str] | None = None
                              ) -> dict[str, list[tuple[str, str, str]]]:
        """Thanos's Metadata API over every endpoint: family -> distinct (type, help, unit)."""
        results = await self._fan(-(1 << 63), (1 << 63) - 1, [], lambda c: c.metric_metadata(
            metric, limit, partial_response=opts.partial_response), opts, warnings)
        merged: dict[str, list[tuple[str, str, str]]] = {}
        for found, warns in results:
            if warnings is not None:
                warnings.extend(warns)
            for name, metas in found.items():
                have = merged.setdefault(name, [])
                have.extend(m for m in metas if m not in have)
        return merged

    async def rule_groups(self, req, opts: SelectOptions = DEFAULT_OPTIONS,
                          warnings: list[str] | None = None) -> list:
        """Thanos's Rules API over every endpoint whose Info announced it (rulers)."""
        unchecked = [c for c in self.clients if self.health.status[c.address].up is None]
        if unchecked:
            await asyncio.gather(*(self.health.check(c) for c in unchecked))
        rulers = [c for c in self.clients if (self.health.status[c.address].info or _NO_INFO).rules]
        results = await asyncio.gather(*(c.rules(req) for c in rulers), return_exceptions=True)
        groups = []
        for c, r in zip(rulers, results):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                msg = f"endpoint {c.address}: {describe_error(r)}"
                if not opts.partial_response:
                    raise StoreUnavailable(msg)
                if warnings is not None:
                    warnings.append(msg)
                continue
            groups.extend(r[0])
            if warnings is not None:
                warnings.extend(r[1])
        return groups

    async def exemplars(self, selectors: list[list[Matcher]], start: int, end: int,
                        opts: SelectOptions = DEFAULT_OPTIONS, warnings: list[str] | None = None
                        ) -> list[tuple[Labels, list[tuple[Labels, float, int]]]]:
        """Thanos's Exemplars API over the endpoints advertising it (or not checked yet), as
        Thanos's proxy asks: the query sent
        is the selectors themselves (each with the enforced matchers added); series from several
        endpoints (replicas) are merged, exemplars deduplicated and time-ordered."""
        extra = list(opts.extra_matchers)
        query = " or ".join(selector_string(ms + extra) for ms in selectors)
        results = await self._fan(*UNBOUNDED, extra, lambda c: c.exemplars(
            query, start, end, partial_response=opts.partial_response), opts, warnings,
            serves=lambda info: info is None or info.exemplars)
        strip = frozenset(opts.replica_labels)
        merged: dict[Labels, set[tuple[Labels, float, int]]] = {}
        for found, warns in results:
            if warnings is not None:
                warnings.extend(warns)
            for lbls, exs in found:
                merged.setdefault(strip_labels(lbls, strip) if strip else lbls, set()).update(exs)
        return [(lbls, sorted(merged[lbls], key=lambda e: (e[2], e[0], e[1])))
                for lbls in sorted(merged)]

    async def close(self) -> None:
        await self.health.stop()
        for c in self.clients:
            await c.close()


def selector_string(matchers: Sequence[Matcher]) -> str:
    """A series selector in PromQL text (``{a="b",c=~"d"}``) that parses back to ``matchers``."""
    return "{" + ",".join(f"{m.name}{m.type.value}{orjson.dumps(m.value).decode()}"
                          for m in matchers) + "}"


def merge_replicas(parts: list[tuple[np.ndarray, np.ndarray]], dedup_func: str, counter: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One sample stream from the (ts, vals) of the same series from several stores/replicas."""
    if len(parts) == 1:
        return parts[0]
    if dedup_func == "penalty":
        return penalty([p for p in parts if len(p[0])] or parts[:1], counter=counter)
    return chain(parts)


def decode_chunks(chunks, mint: int, maxt: int) -> tuple[np.ndarray, np.ndarray]:
    """One store's XOR chunks of a series as time-ordered samples. Chunks may overlap (an
    out-of-order block beside an in-order one of the same range, in a store gateway's
    answer): then one sample per timestamp is kept, the first chunk's."""
    ts, vals = decode_many([c[2] for c in chunks], mint, maxt)
    if len(ts) > 1 and not (ts[1:] > ts[:-1]).all():
        ts, first = np.unique(ts, return_index=True)
        vals = vals[first]
    return ts, vals


def merge_raw_series(raw, mint: int, maxt: int, dedup_func: str = "chain",
                     counter: bool = False) -> list[Series] | SeriesBatch:
    """Decode each series' chunks; series with equal labels (from several stores, or replicas
    once their replica labels are stripped) are merged by ``dedup_func``."""
    batch = _float_batch(raw, mint, maxt)
    if batch is not None:
        return batch
    by_labels: dict[Labels, list] = {}
    with_histograms: set[Labels] = set()
    for s in raw:
        by_labels.setdefault(s.labels, []).append(s.chunks)
        # the client's decoder says when no chunk is a histogram: no look at every chunk
        if s.histograms is not False and any(
                chunk_encoding(c[2]) != ENCODING_XOR for c in s.chunks):
            with_histograms.add(s.labels)
    out = []
    for lbls, chunk_lists in by_labels.items():
        if lbls in with_histograms:
            hs = _with_histograms(lbls, chunk_lists, mint, maxt)
            if hs is not None:
                out.append(hs)
            continue
        ts, vals = merge_replicas([decode_chunks(cl, mint, maxt) for cl in chunk_lists],
                                  dedup_func, counter)
        if len(ts):
            out.append(Series(lbls, ts, vals))
    out.sort(key=lambda s: s.labels)
    return out


# A select feeding a function that goes series by series is decoded in slices (SeriesParts) of
# at most about PART_CHUNKS chunks (at ~120 samples a chunk, ~30 MiB of decoded samples) and
# PART_CELLS series x steps (each of the function's [series, steps] arrays 4 MiB): at scale 4 a
# 1 h rate over 12,000 series made its temporaries, 23 MiB each, of fresh memory (~170 MiB).
PART_CHUNKS = 1 << 14
PART_CELLS = 1 << 19


def series_parts(raw, mint: int, maxt: int, dedup_func: str = "chain", counter: bool = False,
                 steps: int = 0) -> SeriesParts | list[Series] | SeriesBatch:
    """``merge_raw_series`` decoded a slice of series at a time when ``raw`` holds more than
    PART_CHUNKS chunks or, with ``steps`` (the query's steps), more than PART_CELLS series x
    steps (equal label sets, merged by ``dedup_func``, stay in one slice); else
    merge_raw_series's answer."""
    if len(raw) < 2 or (chunk_count(raw) <= PART_CHUNKS and len(raw) * steps <= PART_CELLS):
        return merge_raw_series(raw, mint, maxt, dedup_func, counter)
    labels = list(map(operator.attrgetter("labels"), raw))
    order = _label_order(labels)
    if order is not None:
        raw = list(map(raw.__getitem__, order))
        labels = list(map(labels.__getitem__, order))
    # Each series costs its chunks' share of PART_CHUNKS plus its steps' share of PART_CELLS
    # (in units of 1 / (PART_CHUNKS * PART_CELLS)); a slice holds one whole unit at most.
    chunks = np.fromiter(map(len, map(operator.attrgetter("chunks"), raw)), dtype=np.int64,
                         count=len(raw))
    ends = np.cumsum(chunks * PART_CELLS + steps * PART_CHUNKS)
    unit = PART_CHUNKS * PART_CELLS
    cuts = np.unique(np.searchsorted(ends, np.arange(unit, int(ends[-1]), unit),
                                     side="right")).tolist()
    bounds = [0]
    for c in cuts:  # a cut between equal label sets moves past them (few cuts: a short loop)
        while c < len(raw) and labels[c] == labels[c - 1]:
            c += 1
        if bounds[-1] < c < len(raw):
            bounds.append(c)
    bounds.append(len(raw))
    return SeriesParts([functools.partial(merge_raw_series, raw[a:b], mint, maxt, dedup_func,
                                          counter) for a, b in zip(bounds, bounds[1:])])


def _label_order(labels: list[Labels]) -> list[int] | None:
    """The indices of ``labels`` in ascending order, or None when they already ascend
    strictly (one store's answer: no sort)."""
    if all(map(operator.lt, labels, itertools.islice(labels, 1, None))):
        return None
    return sorted(range(len(labels)), key=labels.__getitem__)


def _float_batch(raw, mint: int, maxt: int) -> SeriesBatch | None:
    """The usual answer -- distinct float series whose chunks do not overlap -- decoded in one
    C call into columns; None when a series repeats (replicas, several stores), may hold
    native histograms, or has overlapping chunks: then series by series."""
    if raw and set(map(operator.attrgetter("histograms"), raw)) != {False}:
        return None
    labels = list(map(operator.attrgetter("labels"), raw))
    order = _label_order(labels)
    if order is None:
        chunks = list(map(operator.attrgetter("chunks"), raw))  # one store's order: no sort
    else:
        labels = list(map(labels.__getitem__, order))
        if any(map(operator.eq, labels, labels[1:])):
            return None
        chunks = [raw[i].chunks for i in order]
    ts, vals, offs = decode_series(chunks, mint, maxt)
    rising = ts[1:] > ts[:-1]
    if len(offs) > 2:  # series boundaries (none in the one-series answer of a small query)
        rising[offs[1:-1][(offs[1:-1] > 0) & (offs[1:-1] < len(ts))] - 1] = True
    if np.count_nonzero(rising) != len(rising):
        return None
    if len(offs) <= 2:  # at most one series: kept if it has samples
        return SeriesBatch(labels if len(ts) else [], ts, vals,
                           offs if len(ts) else np.zeros(1, dtype=np.int64))
    lens = offs[1:] - offs[:-1]
    if np.count_nonzero(lens) != len(lens):
        nz = lens > 0
        labels = [l for l, k in zip(labels, nz.tolist()) if k]
        offs = np.concatenate([[0], np.cumsum(lens[nz])]).astype(np.int64)
    return SeriesBatch(labels, ts, vals, offs)


_STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


def _decode_mixed(chunks, mint: int, maxt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A series' XOR and native histogram chunks as (ts, vals, hists): vals is NaN where
    hists holds an nhist.H; a stale histogram becomes a float staleness marker."""
    ts, vals = decode_many([c[2] for c in chunks if chunk_encoding(c[2]) == ENCODING_XOR],
                           mint, maxt)
    hts: list[int] = []
    hobj: list = []
    hval: list[float] = []
    for _, _, data in chunks:
        if chunk_encoding(data) == ENCODING_XOR:
            continue
        for t, h in decode_chunk(data):
            if mint <= t <= maxt:
                hts.append(t)
                if h.is_stale:
                    hobj.append(None)
                    hval.append(_STALE)
                else:
                    hobj.append(to_engine(h))
                    hval.append(np.nan)
    all_ts = np.concatenate([ts, np.array(hts, dtype=np.int64)])
    all_vals = np.concatenate([vals, np.array(hval, dtype=np.float64)])
    objs = np.empty(len(all_ts), dtype=object)
    objs[len(ts):] = hobj
    order = np.argsort(all_ts, kind="stable")
    all_ts, all_vals, objs = all_ts[order], all_vals[order], objs[order]
    all_ts, first = np.unique(all_ts, return_index=True)  # overlapping chunks: first wins
    return all_ts, all_vals[first], objs[first]


def _with_histograms(lbls: Labels, chunk_lists, mint: int, maxt: int) -> Series | None:
    """A series with native histogram chunks. Replicas are merged by timestamp union (the
    first replica wins a tie), i.e. chain deduplication, whatever ``dedup_func`` says."""
    parts = [_decode_mixed(cl, mint, maxt) for cl in chunk_lists]
    ts = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    objs = np.concatenate([p[2] for p in parts])
    order = np.argsort(ts, kind="stable")
    ts, first = np.unique(ts[order], return_index=True)
    vals, objs = vals[order][first], objs[order][first]
    if not len(ts):
        return None
    has_hist = any(o is not None for o in objs)
    return Series(lbls, ts, vals, objs if has_hist else None)


class FanoutQueryable:
    """A synchronous ``Queryable`` for the engine thread, backed by the async StoreSet.

    Warnings of partial responses collect in ``warnings`` for the API to report. Every select
    waits at most until ``deadline`` (loop time); ``cancel()`` (the API gave up on the query)
    cancels the selects in flight and fails any later one, so a worker stops fetching.
    """

    # Until set (class attributes: no lines of their own per query):
    _cancelled = False
    _fetching: asyncio.Task | None = None  # the task of a fetch() in flight

    def __init__(self, stores: StoreSet, loop: asyncio.AbstractEventLoop,
                 opts: SelectOptions = DEFAULT_OPTIONS, deadline: float | None = None) -> None:
        self.stores = stores
        self.loop = loop
        self.opts = opts
        self.deadline = deadline
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future] = set()
        self._kept: dict[tuple, list] = {}  # select key -> raw series fetched on the loop

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            pending = list(self._pending)
        for f in pending:
            f.cancel()
        if self._fetching is not None:  # a fetch on the loop (cancel() is called there too)
            self._fetching.cancel()

    def _run(self, coro):
        """Run a fan-out coroutine on the loop and wait for its result within the deadline."""
        with self._lock:
            if self._cancelled:
                coro.close()
                raise PromQLError("timeout", TIMEOUT_MSG)
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending.add(fut)
        try:
            left = None if self.deadline is None else max(self.deadline - self.loop.time(), 0.0)
            return fut.result(timeout=left)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError,
                asyncio.CancelledError):
            fut.cancel()
            raise PromQLError("timeout", TIMEOUT_MSG) from None
        finally:
            with self._lock:
                self._pending.discard(fut)

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[Series]:
        return self.select_with_hints(matchers, mint, maxt)

    def select_plan(self, func: str | None, range_ms: int) -> tuple[str, bool, int]:
        """(deduplication function, counter adjustment, downsampled resolution or 0) of a select
        feeding ``func``; as in Thanos, penalty deduplication adjusts counter resets only under
        rate/increase/irate/resets."""
        dedup = self.opts.dedup_func if self.opts.replica_labels else "chain"
        counter = self.opts.counter or func in COUNTER_FUNCS
        return dedup, counter, max_resolution_for(self.opts.max_resolution_ms, func or "", range_ms)

    @staticmethod
    def select_key(matchers: Sequence[Matcher], mint: int, maxt: int) -> tuple:
        return tuple(matchers), mint, maxt

    async def fetch(self, matchers: list[Matcher], mint: int, maxt: int) -> list:
        """A select's raw series, fetched on the loop (querier.inline), within the deadline;
        ``cancel()`` stops it as it stops a worker's select."""
        if self._cancelled:
            raise PromQLError("timeout", TIMEOUT_MSG)
        # the loop given: looking it up costs a getpid() system call per fetch on 3.11
        task = self._fetching = current_task(self.loop)
        # The deadline goes down to the store calls (their own timer ends them at it): no
        # timeout context and timer of its own per fetch. A call ended by it is an endpoint
        # failure there; here, past the deadline, the query has timed out whatever that was.
        try:
            raw = await self.stores.series(mint, maxt, matchers, opts=self.opts,
                                           warnings=self.warnings, until=self.deadline)
        except asyncio.CancelledError:
            if not self._cancelled or task is None:
                raise
            task.uncancel()  # our cancel(), not the caller's
            raise PromQLError("timeout", TIMEOUT_MSG) from None
        except StoreUnavailable:
            self._check_deadline()
            raise
        finally:
            self._fetching = None
        self._check_deadline()
        return raw

    def _check_deadline(self) -> None:
        if self.deadline is not None and self.loop.time() >= self.deadline:
            raise PromQLError("timeout", TIMEOUT_MSG)

    def keep(self, key: tuple, raw: list) -> None:
        """Raw series already fetched for the select ``key``: the worker uses them once."""
        self._kept[key] = raw

    def select_with_hints(self, matchers: list[Matcher], mint: int, maxt: int,
                          func: str | None = None, range_ms: int = 0) -> list[Series]:
        """``func`` is the PromQL function the selector feeds (see ``select_plan``)."""
        return self._select(matchers, mint, maxt, func, range_ms, merge_raw_series)

    def select_parts(self, matchers: list[Matcher], mint: int, maxt: int, func: str | None = None,
                     range_ms: int = 0, steps: int = 0) -> SeriesParts | list[Series] | SeriesBatch:
        """``select_with_hints`` for a selector the engine reads series by series (an instant
        vector selector's lookup, a range function, over ``steps`` steps): a big answer comes
        as SeriesParts, decoded a slice at a time."""
        return self._select(matchers, mint, maxt, func, range_ms,
                            functools.partial(series_parts, steps=steps))

    def _select(self, matchers: list[Matcher], mint: int, maxt: int, func: str | None,
                range_ms: int, merge: Callable):
        dedup, counter, res = self.select_plan(func, range_ms)
        if res > 0:
            return self._select_downsampled(matchers, mint, maxt, res, func or "", dedup, counter)
        raw = self._kept.pop(self.select_key(matchers, mint, maxt), None)
        if raw is None:
            raw = self._run(self.stores.series(mint, maxt, matchers, opts=self.opts,
                                               warnings=self.warnings))
        return merge(raw, mint, maxt, dedup, counter)

    def _select_downsampled(self, matchers, mint, maxt, res, func, dedup, counter) -> list[Series]:
        """Thanos's querier over downsampled blocks: ask for the aggregates ``func`` needs and
        turn them back into one plain sample stream per series (see querier.downsampled)."""
        aggrs = aggrs_from_func(func)
        raw = self._run(self.stores.series_downsampled(mint, maxt, matchers, res, aggrs,
                                                       self.opts, self.warnings))
        by_labels: dict[Labels, list] = {}
        for lbls, chunks in raw:
            ts, vals = series_samples(chunks, aggrs, mint, maxt)
            by_labels.setdefault(lbls, []).append((ts, vals))
        out = []
        for lbls, parts in by_labels.items():
            ts, vals = merge_replicas(parts, dedup, counter)
            if len(ts):
                out.append(Series(lbls, ts, vals))
        out.sort(key=lambda s: s.labels)
        return out
