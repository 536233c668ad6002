"""Alerts to Alertmanager's v2 API (``POST <url>/api/v2/alerts``), as Prometheus's notifier:
a bounded queue (the oldest alerts dropped when full), batches of at most 64, every batch to
every Alertmanager; a batch counts as sent when one of them took it."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime, timezone
from urllib.parse import quote_plus

import aiohttp
import orjson
from common.aio import cancel_and_wait
from prometheus_client import CollectorRegistry, Counter, Gauge

from .rules import Alert

log = logging.getLogger(__name__)

MAX_QUEUE = 10_000
MAX_BATCH = 64


def rfc3339(ms: int) -> str:
    """Go's time.Time JSON (RFC 3339, milliseconds as the rule timestamps have, UTC)."""
    t = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    frac = f"{t.microsecond // 1000:03d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def generator_url(query_url: str, expr: str) -> str:
    """Thanos's default ``--alert.query-template``: the expression's table view."""
    return f"{query_url.rstrip('/')}/graph?g0.expr={quote_plus(expr)}&g0.tab=1"


def alert_payload(a: Alert, expr: str, query_url: str, external: dict[str, str],
                  drop: frozenset[str]) -> dict:
    """One alert as Alertmanager's postableAlert: external labels added where missing,
    ``--alert.label-drop`` names removed; ends when resolved, else when its validity runs out."""
    labels = dict(external)
    labels.update(a.labels)
    for name in drop:
        labels.pop(name, None)
    return {"labels": labels, "annotations": dict(a.annotations),
            "startsAt": rfc3339(a.fired_at_ms),
            "endsAt": rfc3339(a.resolved_at_ms if a.resolved_at_ms else a.valid_until_ms),
            "generatorURL": generator_url(query_url, expr)}


def alertmanager_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.startswith(("dns+", "dnssrv+")):
        url = url.split("+", 1)[1]
    if "://" not in url:
        raise ValueError(f"--alertmanagers.url {url!r}: the scheme must not be empty "
                         f"(e.g. http://{url})")
    return url + "/api/v2/alerts"


class Notifier:
    def __init__(self, urls: list[str], query_url: str, external: dict[str, str],
                 label_drop: list[str], timeout_s: float, registry: CollectorRegistry) -> None:
        self.urls = [alertmanager_url(u) for u in urls]
        self.query_url = query_url
        self.external = external
        self.drop = frozenset(label_drop)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.queue: deque[dict] = deque()
        self.wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = Counter("thanos_alert_sender_alerts_sent", "Alerts sent by Alertmanager.",
                            ["alertmanager"], registry=registry)
        self.errors = Counter("thanos_alert_sender_errors", "Failed sends by Alertmanager.",
                              ["alertmanager"], registry=registry)
        self.dropped = Counter("thanos_alert_queue_alerts_dropped",
                               "Alerts dropped because the queue was full or no Alertmanager "
                               "took them.", registry=registry)
        Gauge("thanos_alert_queue_length", "Alerts waiting to be sent.", registry=registry
              ).set_function(lambda: len(self.queue))

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._session is not None:
            await self._session.close()

    async def send(self, alerts: list[Alert], expr: str) -> None:
        if not self.urls:
            return
        for a in alerts:
            if len(self.queue) >= MAX_QUEUE:
                self.queue.popleft()
                self.dropped.inc()
            self.queue.append(alert_payload(a, expr, self.query_url, self.external, self.drop))
        self.wake.set()

    async def _run(self) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            batch = [self.queue.popleft() for _ in range(min(MAX_BATCH, len(self.queue)))]
            body = orjson.dumps(batch)
            ok = await asyncio.gather(*(self._post(u, body) for u in self.urls))
            if not any(ok):
                self.dropped.inc(len(batch))

    async def _post(self, url: str, body: bytes) -> bool:
        assert self._session is not None
        try:
            async with self._session.post(url, data=body,
                                          headers={"Content-Type": "application/json"}) as r:
                text = await r.content.read(512)
                if r.status // 100 == 2:
                    self.sent.labels(url).inc(body.count(b'"generatorURL"'))
                    return True
                why = f"HTTP {r.status}: {text[:200]!r}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            why = str(e) or type(e).__name__
        self.errors.labels(url).inc()
        log.warning("sending alerts to Alertmanager failed", extra={"url": url, "err": why})
        return False
