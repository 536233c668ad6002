"""Routes of the web UI: the pages, their static assets and the JSON they read.

Pages are one HTML shell (``index.html``) that names the page and the prefix the browser sees;
the JavaScript under ``static/`` renders the page from the Prometheus/Thanos HTTP API.
"""
from __future__ import annotations

import asyncio
import html
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

# The querier's pages: path and nav bar title.
QUERY_PAGES = (("graph", "Query"), ("stores", "Stores"), ("status", "Status"), ("flags", "Flags"))
STATIC_DIR = Path(str(resources.files(__package__) / "static"))
# The pages run only their own scripts and talk only to this server, whatever a label holds.
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as Thanos reports a never-checked endpoint
# Registry samples that say something about the ingestors' heads (present in ``promring up``).
HEAD_GAUGES = {"prometheus_tsdb_head_series": "headSeries",
               "promring_head_chunk_bytes": "headChunkBytes",
               "prometheus_tsdb_head_samples_appended_total": "samplesAppended"}


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps({"status": "success", "data": data}),
                        content_type="application/json")


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def store_statuses(statuses: Iterable[Any]) -> dict[str, list[dict]]:
    """Thanos's ``/api/v1/stores`` data: endpoints grouped by component type, sorted by name.

    Takes objects shaped like ``querier.endpoints.EndpointStatus``. Unlike Thanos, an endpoint
    that never answered is listed too (type ``unknown``) so that the page shows it as down.
    """
    out: dict[str, list[dict]] = {}
    for st in sorted(statuses, key=lambda s: s.address):
        info = st.info
        kind = (info.component if info is not None else "") or "unknown"
        out.setdefault(kind, []).append({
            "name": st.address,
            "lastCheck": rfc3339(st.last_check) if st.last_check else ZERO_TIME,
            "lastError": st.last_error or None,
            "labelSets": [dict(ls) for ls in info.label_sets] if info is not None else [],
            "minTime": info.min_time if info is not None else 0,
            "maxTime": info.max_time if info is not None else 0,
        })
    return out


def runtime_info(start_time: float, registry: CollectorRegistry | None) -> dict[str, Any]:
    """Prometheus's ``/api/v1/status/runtimeinfo`` fields that apply, plus the Python process's
    own (threads, tasks, memory) and the head gauges of an in-process ingestor."""
    info: dict[str, Any] = {
        "startTime": rfc3339(start_time), "CWD": os.getcwd(),
        "pythonVersion": platform.python_version(), "platform": f"{sys.platform}/{platform.machine()}",
        "pid": os.getpid(), "cpuCount": os.cpu_count(), "threadCount": threading.active_count(),
        "asyncioTasks": len(asyncio.all_tasks()),
    }
    try:
        info["openFDs"] = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/statm") as f:
            info["residentMemoryBytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    if registry is not None:
        info.update(head_stats(registry))
    return info


def head_stats(registry: CollectorRegistry) -> dict[str, int]:
    """HEAD_GAUGES summed over their label sets (tenants); absent ones are left out."""
    sums: dict[str, int] = {}
    for family in registry.collect():
        for sample in family.samples:
            key = HEAD_GAUGES.get(sample.name)
            if key is not None:
                sums[key] = sums.get(key, 0) + int(sample.value)
    return sums


@dataclass
class WebUI:
    """The UI's routes. ``endpoints`` returns the querier's endpoint states when called;
    ``prefix`` is the path the browser sees in front of every route (--web.external-prefix)."""

    endpoints: Callable[[], Iterable[Any]] | None  # None: no endpoint/status API (bucket viewer)
    prefix: str = ""
    pages: tuple[tuple[str, str], ...] = QUERY_PAGES   # the first is where / leads
    flags: dict[str, str] = field(default_factory=dict)
    version: str = ""
    registry: CollectorRegistry | None = None
    start_time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        nav = "\n".join(f'  <a href="{{{{PREFIX}}}}/{p}" data-nav="{p}">{html.escape(t)}</a>'
                        for p, t in self.pages)
        self._shell = (STATIC_DIR / "index.html").read_text().replace("{{NAV}}", nav)
        self.home = self.pages[0][0]

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.root)
        for page, _ in self.pages:
            r.add_get(f"/{page}", self.page)
        r.add_static("/static", STATIC_DIR, append_version=False)
        if self.endpoints is None:
            return
        taken = {res.canonical for res in r.resources()}
        for path, handler in (("/api/v1/stores", self.stores),
                              ("/api/v1/status/flags", self.flag_values),
                              ("/api/v1/status/runtimeinfo", self.runtimeinfo)):
            if path not in taken:  # the query API may serve these itself
                r.add_get(path, handler)

    def register_redirects(self, app: web.Application, route_prefix: str) -> None:
        """With a route prefix, ``/`` and the bare prefix lead to the query page (as Thanos)."""
        app.router.add_get("/", self.root)
        app.router.add_get(route_prefix, self.root)

    async def root(self, _: web.Request) -> web.Response:
        raise web.HTTPFound(f"{self.prefix}/{self.home}")

    async def page(self, request: web.Request) -> web.Response:
        name = request.path.rstrip("/").rsplit("/", 1)[-1]
        body = (self._shell.replace("{{PREFIX}}", html.escape(self.prefix))
                .replace("{{PAGE}}", name).replace("{{HOME}}", self.home)
                .replace("{{VERSION}}", html.escape(self.version)))
        return web.Response(text=body, content_type="text/html",
                            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})

    async def stores(self, _: web.Request) -> web.Response:
        return _json(store_statuses(self.endpoints() if self.endpoints else ()))

    async def flag_values(self, _: web.Request) -> web.Response:
        return _json(self.flags)

    async def runtimeinfo(self, _: web.Request) -> web.Response:
        return _json(runtime_info(self.start_time, self.registry))
