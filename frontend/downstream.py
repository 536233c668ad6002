"""Requests to the downstream querier, retried on 5xx answers and connection errors."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from yarl import URL
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Histogram

log = logging.getLogger("promring.frontend")

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets itself: never copied through.
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length"))


@dataclass
class Answer:
    status: int
    headers: CIMultiDict
    body: bytes


class DownstreamError(Exception):
    """The downstream could not be reached after every retry."""


class Downstream:
    def __init__(self, base_url: str, registry: CollectorRegistry, timeout_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=10)
        self.retries = Histogram("cortex_query_frontend_retries",
                                 "Number of times a request is retried.",
                                 buckets=(0, 1, 2, 3, 4, 5), registry=registry)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            timeout=self.timeout, auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=100))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def request(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                      headers: CIMultiDict | dict | None = None, max_tries: int = 5) -> Answer:
        """The downstream's answer to ``path`` and ``query`` (both already URL-encoded); a 5xx answer or a connection error is tried again, up to
        ``max_tries`` attempts in all. The last 5xx answer is returned as it is; a connection
        failure on the last attempt raises DownstreamError."""
        assert self.session is not None, "start() first"
        url = URL(self.base_url + path + (f"?{query}" if query else ""), encoded=True)
        tries = max(1, max_tries)
        last_error: Exception | None = None
        for attempt in range(tries):
            try:
                async with self.session.request(method, url, data=body, headers=headers,
                                                allow_redirects=False) as r:
                    answer = Answer(r.status, CIMultiDict(r.headers), await r.read())
                if answer.status < 500 or attempt == tries - 1:
                    self.retries.observe(attempt)
                    return answer
                log.debug("downstream 5xx, retrying", extra={"status": answer.status})
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                last_error = e
                log.debug("downstream failed, retrying", extra={"err": repr(e)})
            await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        self.retries.observe(tries - 1)
        raise DownstreamError(f"downstream {self.base_url}: {last_error!r}")
