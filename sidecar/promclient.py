"""The few Prometheus HTTP APIs a sidecar reads: configuration (external labels), flags,
the lowest stored timestamp, series/label lookups, remote read and ``/-/reload``."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from urllib.parse import quote

import aiohttp
import yaml

from receiver.tsdb.labels import Labels, Matcher, MatchType

# Prometheus's HTTP API clamps times to these (its minTime/maxTime), in ms.
API_MIN_MS = (-(1 << 63) // 1000 + 62135596801) * 1000
API_MAX_MS = ((1 << 63) // 1000 - 62135596801) * 1000
MIN_INT64 = -(1 << 63)
MAX_INT64 = (1 << 63) - 1
USER_AGENT = "Thanos/promring-sidecar"

_OPS = {MatchType.EQ: "=", MatchType.NEQ: "!=", MatchType.RE: "=~", MatchType.NRE: "!~"}


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with what was asked for (or not at all)."""


def selector(matchers: Iterable[Matcher]) -> str:
    """A PromQL series selector for ``matchers`` (values quoted as PromQL string literals)."""
    return "{" + ",".join(f"{m.name}{_OPS[MatchType(m.type)]}{json.dumps(m.value)}"
                          for m in matchers) + "}"


def api_time(ms: int) -> str:
    """A time in ms as the HTTP API's float seconds, clamped to what the API accepts."""
    ms = min(max(ms, API_MIN_MS), API_MAX_MS)
    return f"{ms // 1000}.{ms % 1000:03d}"


def external_labels_of(config_yaml: str) -> Labels:
    """``global.external_labels`` of a Prometheus configuration, sorted."""
    doc = yaml.safe_load(config_yaml) or {}
    if not isinstance(doc, Mapping):
        raise PrometheusError("configuration is not a YAML mapping")
    ext = (doc.get("global") or {}).get("external_labels") or {}
    if not isinstance(ext, Mapping):
        raise PrometheusError("global.external_labels is not a mapping")
    return tuple(sorted((str(k), str(v)) for k, v in ext.items()))


class PrometheusClient:
    """One aiohttp session against one Prometheus base URL."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _api(self, method: str, path: str, **kw) -> object:
        """``data`` of a Prometheus API answer; PrometheusError for anything else."""
        try:
            async with self.session.request(method, self.base + path, timeout=self._timeout,
                                            **kw) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PrometheusError(f"{method} {path}: {e!r}") from e
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if status != 200 or not isinstance(doc, dict) or doc.get("status") != "success":
            err = doc.get("error") if isinstance(doc, dict) else body[:200].decode(errors="replace")
            raise PrometheusError(f"{method} {path}: HTTP {status}: {err}")
        return doc.get("data")

    async def external_labels(self) -> Labels:
        data = await self._api("GET", "/api/v1/status/config")
        if not isinstance(data, dict) or not isinstance(data.get("yaml"), str):
            raise PrometheusError("/api/v1/status/config: no yaml in the answer")
        return external_labels_of(data["yaml"])

    async def flags(self) -> dict[str, str] | None:
        """Prometheus's command-line flags; None when it has no flags API (older versions)."""
        try:
            async with self.session.get(self.base + "/api/v1/status/flags",
                                        timeout=self._timeout) as r:
                if r.status == 404:
                    return None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PrometheusError(f"GET /api/v1/status/flags: {e!r}") from e
        data = await self._api("GET", "/api/v1/status/flags")
        if not isinstance(data, dict):
            raise PrometheusError("/api/v1/status/flags: not an object")
        return {str(k): str(v) for k, v in data.items()}

    async def lowest_timestamp_ms(self) -> int:
        """``prometheus_tsdb_lowest_timestamp_seconds`` from its /metrics (as Thanos reads it);
        nothing stored yet (the gauge is MaxInt64) means MinInt64, so this Prometheus is asked."""
        try:
            async with self.session.get(self.base + "/metrics", timeout=self._timeout) as r:
                text = (await r.read()).decode(errors="replace")
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PrometheusError(f"GET /metrics: {e!r}") from e
        if status != 200:
            raise PrometheusError(f"GET /metrics: HTTP {status}")
        for line in text.splitlines():
            if line.startswith("prometheus_tsdb_lowest_timestamp_seconds"):
                try:
                    value = float(line.rsplit(None, 1)[-1]) * 1000
                except ValueError:
                    break
                if not math.isfinite(value) or value >= float(MAX_INT64):
                    return MIN_INT64
                return int(value)
        raise PrometheusError("metrics did not contain 'prometheus_tsdb_lowest_timestamp_seconds'")

    async def series(self, matchers: list[Matcher], start_ms: int, end_ms: int,
                     limit: int = 0) -> list[dict[str, str]]:
        form = [("match[]", selector(matchers)), ("start", api_time(start_ms)),
                ("end", api_time(end_ms))]
        if limit > 0:
            form.append(("limit", str(limit)))
        data = await self._api("POST", "/api/v1/series", data=form)
        if not isinstance(data, list):
            raise PrometheusError("/api/v1/series: not a list")
        return [d for d in data if isinstance(d, dict)]

    async def label_names(self, matchers: list[Matcher], start_ms: int, end_ms: int
                          ) -> list[str]:
        form = [("start", api_time(start_ms)), ("end", api_time(end_ms))]
        if matchers:
            form.append(("match[]", selector(matchers)))
        data = await self._api("POST", "/api/v1/labels", data=form)
        return [str(x) for x in data] if isinstance(data, list) else []

    async def label_values(self, name: str, matchers: list[Matcher], start_ms: int,
                           end_ms: int) -> list[str]:
        params = [("start", api_time(start_ms)), ("end", api_time(end_ms))]
        if matchers:
            params.append(("match[]", selector(matchers)))
        data = await self._api("GET", f"/api/v1/label/{quote(name, safe='')}/values",
                               params=params)
        return [str(x) for x in data] if isinstance(data, list) else []

    async def reload(self) -> None:
        """POST ``/-/reload`` (Prometheus runs with --web.enable-lifecycle)."""
        try:
            async with self.session.post(self.base + "/-/reload", timeout=self._timeout) as r:
                body = (await r.read())[:300].decode(errors="replace")
                if r.status != 200:
                    raise PrometheusError(f"POST /-/reload: HTTP {r.status}: {body.strip()}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PrometheusError(f"POST /-/reload: {e!r}") from e
