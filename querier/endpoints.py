"""Health of the querier's StoreAPI endpoints, as Thanos's endpoint set keeps it.

A background loop asks every endpoint for its Info: a healthy one every few seconds (which also
refreshes its time range and external labels), a failing one again after an exponential backoff.
Queries skip an endpoint known to be down instead of waiting on it, and a query that sees an
endpoint fail marks it down at once. Each change of state is logged once, not per query, and
``thanos_store_nodes_grpc_connections`` counts the healthy endpoints.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from receiver.tsdb.labels import Labels
from storeapi.client import StoreClient
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

UNBOUNDED_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class HealthOptions:
    """How often endpoints are checked; the backoff doubles per failed check up to the max."""

    healthy_interval_s: float = 5.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 10.0
    info_timeout_s: float = 5.0     # Thanos's --endpoint.info-timeout
    tick_s: float = 0.25


@dataclass
class Info:
    """What an endpoint's Info said: the data it may hold."""

    min_time: int
    max_time: int
    label_sets: list[Labels]
    component: str = ""
    rules: bool = False  # serves the Rules API
    exemplars: bool = False  # advertises the Exemplars API


@dataclass
class EndpointStatus:
    address: str
    up: bool | None = None          # None: not checked yet (then a query still asks it)
    last_error: str = ""
    last_check: float = 0.0         # wall clock of the last check, for /api/v1/stores
    failures: int = 0               # consecutive failed checks (the backoff exponent)
    next_check: float = 0.0         # loop time
    info: Info | None = None
    changes: int = field(default=0, repr=False)


def describe_error(e: BaseException) -> str:
    details = getattr(e, "details", None)
    if callable(details):
        try:
            return f"{e.code().name}: {details()}"  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            pass
    return str(e) or type(e).__name__


def is_connection_error(e: BaseException) -> bool:
    """Errors that say the endpoint is unreachable (not that it refused this one request)."""
    code = getattr(e, "code", None)
    if callable(code):
        try:
            return code() == grpc.StatusCode.UNAVAILABLE
        except Exception:  # noqa: BLE001
            return False
    return isinstance(e, (ConnectionError, OSError))


def label_sets_string(sets: Sequence[Labels]) -> str:
    """Thanos's PromLabelSetsToString: ``{a="1", b="2"},{...}``."""
    return ",".join(sorted("{" + ", ".join(f'{n}="{v}"' for n, v in ls) + "}" for ls in sets))


class EndpointHealth:
    def __init__(self, clients: Sequence[StoreClient], opts: HealthOptions = HealthOptions(),
                 registry: CollectorRegistry | None = None) -> None:
        self.clients = list(clients)
        self.opts = opts
        self.status = {c.address: EndpointStatus(c.address) for c in self.clients}
        self._task: asyncio.Task | None = None
        self._started = False
        self._changed = asyncio.Event()  # a check is due sooner than the loop sleeps until
        if registry is not None:
            registry.register(_ConnectionsCollector(self))

    def set_clients(self, clients: Sequence[StoreClient]) -> None:
        """Track exactly these endpoints (file SD); known ones keep their state."""
        self.clients = list(clients)
        self.status = {c.address: self.status.get(c.address) or EndpointStatus(c.address)
                       for c in self.clients}
        self._changed.set()
        if self._task is None and self.clients and self._started:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def start(self) -> None:
        self._started = True
        if self._task is None and self.clients:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        """Each due endpoint is checked in its own task, so a hung one delays no other. In
        between the loop sleeps until the next check is due (at least ``tick_s``), or until
        the endpoints or a check's time change: an idle querier is not woken every tick (each
        wake-up is a few system calls and cold caches for the next query)."""
        loop = asyncio.get_running_loop()
        checking: dict[str, asyncio.Task] = {}

        def ended(address: str) -> None:
            checking.pop(address, None)
            self._changed.set()
        try:
            while True:
                self._changed.clear()
                soonest = self._start_due(loop, checking, ended)
                if soonest is not None:
                    soonest = max(soonest, loop.time() + self.opts.tick_s)
                try:
                    async with asyncio.timeout_at(soonest):
                        await self._changed.wait()
                except TimeoutError:
                    pass
        finally:
            for t in list(checking.values()):
                t.cancel()

    def _start_due(self, loop: asyncio.AbstractEventLoop, checking: dict[str, asyncio.Task],
                   ended: Callable[[str], None]) -> float | None:
        """Start the check of every due endpoint not being checked; the loop time the next
        one is due at (None: none until something changes)."""
        now, soonest = loop.time(), None
        for c in self.clients:
            if c.address in checking:
                continue
            due = self.status[c.address].next_check
            if due <= now:
                t = loop.create_task(self.check(c))
                checking[c.address] = t
                t.add_done_callback(lambda _, a=c.address: ended(a))
            elif soonest is None or due < soonest:
                soonest = due
        return soonest

    async def check(self, c: StoreClient) -> None:
        """One Info call; its outcome sets the endpoint's state and its next check."""
        try:
            i = await asyncio.wait_for(c.info(), timeout=self.opts.info_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 -- any failure means unhealthy
            self.mark_down(c.address, e if not isinstance(e, TimeoutError)
                           else TimeoutError("Info call timed out"))
            return
        lo, hi = i.min_time, i.max_time
        if i.component_type.lower() == "receive":
            # A receiver's head grows all the time (Thanos does the same); an empty one
            # (min > max) may hold anything by the next query.
            lo, hi = (lo if lo <= hi else -UNBOUNDED_MAX - 1), UNBOUNDED_MAX
        self.mark_up(c.address, Info(lo, hi, list(i.label_sets), i.component_type.lower(),
                                     rules=i.serves_rules, exemplars=i.exemplars))

    def mark_up(self, address: str, info: Info | None = None) -> None:
        st = self.status.get(address)
        if st is None:  # dropped by file SD while its check ran
            return
        st.last_check, st.last_error, st.failures = time.time(), "", 0
        st.next_check = asyncio.get_running_loop().time() + self.opts.healthy_interval_s
        self._changed.set()
        if info is not None:
            st.info = info
        if st.up is not True:
            st.up, st.changes = True, st.changes + 1
            log.info("endpoint healthy", extra={
                "address": address, "component": st.info.component if st.info else "",
                "extLset": label_sets_string(st.info.label_sets) if st.info else ""})

    def mark_down(self, address: str, err: BaseException) -> None:
        st = self.status.get(address)
        if st is None:
            return
        st.last_check, st.last_error = time.time(), describe_error(err)
        st.failures += 1
        backoff = min(self.opts.backoff_min_s * 2 ** (st.failures - 1), self.opts.backoff_max_s)
        st.next_check = asyncio.get_running_loop().time() + backoff
        self._changed.set()
        if st.up is not False:
            st.up, st.changes = False, st.changes + 1
            log.warning("endpoint unhealthy, queries skip it until it answers again",
                        extra={"address": address, "err": st.last_error})

    def is_down(self, address: str) -> bool:
        return self.status[address].up is False

    def by_component(self) -> dict[str, list[dict]]:
        """Each endpoint's state in the shape of Thanos's ``/api/v1/stores``."""
        out: dict[str, list[dict]] = {}
        for st in self.status.values():
            info = st.info
            out.setdefault(info.component if info and info.component else "unknown", []).append({
                "name": st.address,
                "lastCheck": (datetime.fromtimestamp(st.last_check, timezone.utc).isoformat()
                              .replace("+00:00", "Z") if st.last_check else None),
                "lastError": st.last_error or None,
                "labelSets": [dict(ls) for ls in info.label_sets] if info else [],
                "minTime": info.min_time if info else 0,
                "maxTime": info.max_time if info else 0})
        return out

    def healthy(self) -> Iterator[EndpointStatus]:
        return (st for st in self.status.values() if st.up)


class _ConnectionsCollector:
    """Thanos's ``thanos_store_nodes_grpc_connections{external_labels, store_type}``."""

    def __init__(self, health: EndpointHealth) -> None:
        self.health = health

    def describe(self):
        return [GaugeMetricFamily("thanos_store_nodes_grpc_connections", "", labels=[])]

    def collect(self):
        g = GaugeMetricFamily(
            "thanos_store_nodes_grpc_connections",
            "Number of gRPC connection to Store APIs. Opened connection means healthy store "
            "APIs available for Querier.", labels=["external_labels", "store_type"])
        counts: dict[tuple[str, str], int] = {}
        for st in self.health.healthy():
            info = st.info or Info(0, 0, [])
            key = (label_sets_string(info.label_sets) or "no_external_labels", info.component)
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            g.add_metric(list(key), n)
        yield g
