"""Rule expressions evaluated over HTTP by the queriers (``--query``, ``--query.sd-files``), as
Thanos's ruler does: POST ``/api/v1/query`` with ``dedup`` and ``partial_response``; the first
querier that answers wins, the others are tried in turn. Never blocks the event loop."""
from __future__ import annotations

import logging
import math
import random
from typing import Callable

import aiohttp
import orjson

from .rules import RuleError, Sample

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 << 20  # a querier answer larger than this is refused
_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}


def query_base_url(address: str) -> str:
    """``host:port`` or ``http(s)://host:port/prefix`` -> the URL API paths are appended to."""
    address = address.strip().rstrip("/")
    if address.startswith(("dns+", "dnssrv+")):
        address = address.split("+", 1)[1]
    return address if "://" in address else f"http://{address}"


def _value(text: str) -> float:
    v = _SPECIAL.get(text)
    return v if v is not None else float(text)


def parse_instant_result(body: bytes) -> list[Sample]:
    """A /api/v1/query answer -> an instant vector (a scalar is one sample without labels, as
    Prometheus's rule query function treats it); anything else is a RuleError."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RuleError(f"querier answered invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RuleError("querier answered something that is not a query result")
    if doc.get("status") != "success":
        raise RuleError(f"{doc.get('errorType', 'error')}: {doc.get('error', 'query failed')}")
    data = doc.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "vector":
            return [({str(k): str(v) for k, v in e["metric"].items()}, _value(e["value"][1]))
                    for e in result if "value" in e]
        if kind == "scalar":
            return [({}, _value(result[1]))]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise RuleError(f"querier answered a malformed {kind}: {e}") from None
    raise RuleError("rule result is not a vector or scalar")


class QueryClient:
    def __init__(self, addresses: Callable[[], list[str]], timeout_s: float = 120.0,
                 method: str = "POST", partial_response: bool = False) -> None:
        self.addresses = addresses
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.method = method
        self.partial_response = partial_response
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _get(self, path: str, params: dict[str, str]) -> bytes:
        addrs = list(self.addresses())
        if not addrs:
            raise RuleError("no query API server configured (--query, --query.sd-files)")
        random.shuffle(addrs)
        errors = []
        for a in addrs:
            url = query_base_url(a) + path
            try:
                kw = {"data": params} if self.method == "POST" else {"params": params}
                async with self._sess().request(self.method, url, **kw) as r:
                    body = await r.content.read(MAX_RESPONSE_BYTES + 1)
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise RuleError(f"{url}: answer larger than {MAX_RESPONSE_BYTES} bytes")
                    if r.status >= 500 or (r.status != 200 and not body.startswith(b"{")):
                        raise RuleError(f"{url}: HTTP {r.status}: {body[:200]!r}")
                    return body
            except (aiohttp.ClientError, TimeoutError, OSError, RuleError) as e:
                errors.append(f"{url}: {e}" if not isinstance(e, RuleError) else str(e))
        raise RuleError("no query API server answered: " + "; ".join(errors))

    async def instant(self, expr: str, ts_ms: int) -> list[Sample]:
        body = await self._get("/api/v1/query", {
            "query": expr, "time": f"{ts_ms / 1000:.3f}", "dedup": "true",
            "partial_response": "true" if self.partial_response else "false"})
        return parse_instant_result(body)

    async def last_samples(self, selector: str, ts_ms: int, window_ms: int
                           ) -> list[tuple[dict[str, str], int, float]]:
        """The newest sample within ``window_ms`` before ``ts_ms`` of each series of a selector
        (restoring ``for`` state from ALERTS_FOR_STATE): (labels, timestamp ms, value)."""
        body = await self._get("/api/v1/query", {
            "query": f"{selector}[{max(1, window_ms // 1000)}s]", "time": f"{ts_ms / 1000:.3f}",
            "dedup": "true", "partial_response": "false"})
        try:
            doc = orjson.loads(body)
            if doc.get("status") != "success" or doc["data"]["resultType"] != "matrix":
                raise RuleError(f"restore query failed: {doc.get('error', 'not a matrix')}")
            return [(e["metric"], int(round(float(e["values"][-1][0]) * 1000)),
                     _value(e["values"][-1][1])) for e in doc["data"]["result"] if e["values"]]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError,
                AttributeError) as e:
            raise RuleError(f"restore query: malformed answer: {e}") from None
