"""The endpoints every component serves: ``/metrics``, ``/-/healthy``, ``/-/ready``."""
from __future__ import annotations

import asyncio
from typing import Callable, Protocol, TypeVar

from aiohttp import web
from prometheus_client import (CollectorRegistry, GCCollector, Gauge, PlatformCollector,
                               ProcessCollector, generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.tls import HTTP1, ReloadingServerContext, ServerTLS
from common.webconfig import WebConfigFile, web_middleware

T = TypeVar("T")


def new_registry() -> CollectorRegistry:
    """A component's own registry, with the process_*, python_info and python_gc_* metrics
    every Prometheus-instrumented process exposes (memory, CPU, file descriptors)."""
    registry = CollectorRegistry()
    add_build_info(registry)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def build_info_labels() -> dict[str, str]:
    """prometheus/common's build-info labels; the Go runtime ones name Python's instead."""
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version
    try:
        v = version("promring")
    except PackageNotFoundError:
        v = "unknown"
    return {"version": v, "revision": "unknown", "branch": "unknown", "tags": "unknown",
            "goversion": f"python{platform.python_version()}", "goos": sys.platform,
            "goarch": platform.machine()}


def add_build_info(registry: CollectorRegistry) -> None:
    """``thanos_build_info`` (what Thanos dashboards and alerts select on) and
    ``promring_build_info``, both a constant 1 labelled with the version."""
    labels = build_info_labels()
    for prefix in ("thanos", "promring"):
        Gauge(f"{prefix}_build_info", f"A metric with a constant '1' value labeled by version, "
              f"revision, branch and the Python version {prefix} runs on.", list(labels),
              registry=registry).labels(**labels).set(1)


def add_ops_routes(app: web.Application, registry: CollectorRegistry,
                   is_ready: Callable[[], bool]) -> None:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def ready(_: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="OK")
        return web.Response(status=503, text="not ready")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)


# A connection idle this long, or this long into a request whose headers have not all arrived,
# is closed (aiohttp's keep-alive timer runs from the connection's start and after each
# response). Without it a client that stops mid-request holds its connection forever.
IDLE_OR_HEADER_TIMEOUT_S = 30.0
# Longest request line and header line: Go's net/http (http.DefaultMaxHeaderBytes) takes 1 MiB,
# aiohttp 8 KiB by default -- a long PromQL in a GET URL that Prometheus answers was a 400.
MAX_HEADER_LINE_BYTES = 1 << 20


class HTTPFront(Protocol):
    """A protocol in front of aiohttp on a plain-HTTP socket that answers some requests
    itself and hands every other connection to aiohttp's handler (querier.fasthttp)."""

    def protocol_factory(self, aiohttp_handler: Callable[[], asyncio.Protocol],
                         idle_timeout_s: float) -> Callable[[], asyncio.Protocol]: ...

    async def shutdown(self) -> None: ...


class _FrontSite(web.TCPSite):
    """A TCP site whose connections start with ``front``'s protocol instead of aiohttp's."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, front: HTTPFront,
                 idle_timeout_s: float) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._front, self._idle_timeout_s = front, idle_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._front.protocol_factory(server, self._idle_timeout_s), self._host, self._port,
            reuse_address=True, backlog=self._backlog)


async def start_site(app: web.Application, address: str, tls: ServerTLS | None = None,
                     web_config: WebConfigFile | None = None, front: HTTPFront | None = None,
                     **handler_args) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (port 0 picks a free one); returns the runner and port.

    ``web_config`` (``--http.config``) adds basic auth and headers, and TLS unless ``tls``
    (a component's own TLS flags) is enabled; certificates are re-read when they change.
    ``front`` (plain HTTP only) owns the connections first; the runner's cleanup shuts it
    down with aiohttp's connections."""
    host, port = split_address(address)
    ssl_context = None
    if tls is not None and tls.enabled:
        ssl_context = ReloadingServerContext(lambda: tls, HTTP1).context
    elif web_config is not None and web_config.current().tls is not None:
        first = web_config.current().tls
        ssl_context = ReloadingServerContext(lambda: web_config.current().tls or first, HTTP1).context
    if web_config is not None:
        app.middlewares.append(web_middleware(web_config))
    handler_args.setdefault("keepalive_timeout", IDLE_OR_HEADER_TIMEOUT_S)
    handler_args.setdefault("max_line_size", MAX_HEADER_LINE_BYTES)
    handler_args.setdefault("max_field_size", MAX_HEADER_LINE_BYTES)
    if front is not None and ssl_context is None:
        app.on_shutdown.append(lambda _: front.shutdown())
    else:
        front = None
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **handler_args)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context) \
        if front is None else _FrontSite(runner, host, port, front,
                                         handler_args["keepalive_timeout"])
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def registry_shared(registry: CollectorRegistry, key: str, make: Callable[[CollectorRegistry], T]
                    ) -> T:
    """The one ``make(registry)`` of ``key`` for this registry: ``promring up`` runs several
    components on one registry, and a metric can be registered only once."""
    shared = registry.__dict__.setdefault("_promring_shared", {})
    if key not in shared:
        shared[key] = make(registry)
    return shared[key]
