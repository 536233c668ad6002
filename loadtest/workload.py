"""The load test's workload: realistic series, their samples over time, and dashboard queries.

Kept free of locust so the headless runner, the locustfile and tests share one definition.
Series look like what Prometheus scrapes from a fleet of Kubernetes pods running node_exporter
and an HTTP service: every *target* (pod) exposes the same template of ~100 series; churn
replaces whole targets (a pod restart gives a new ``pod`` and ``instance``), which is how series
churn happens in practice.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np

from receiver.remotewrite import encode_write_request, snappy_compress

RW_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
              "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": "promring-loadtest"}

_MODES = ("idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice")
_HANDLERS = ("/api/orders", "/api/users", "/api/cart", "/healthz", "/metrics")
_LE = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf")


def _template() -> list[tuple[tuple[tuple[str, str], ...], str]]:
    """One target's series as (extra labels incl. __name__, kind) with kind counter/gauge/bucket."""
    out: list[tuple[tuple[tuple[str, str], ...], str]] = []
    for cpu in range(4):
        for mode in _MODES:
            out.append(((("__name__", "node_cpu_seconds_total"), ("cpu", str(cpu)), ("mode", mode)), "counter"))
    for name in ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached"):
        out.append(((("__name__", f"node_memory_{name}_bytes"),), "gauge"))
    for h in _HANDLERS:
        for code in ("200", "404", "500"):
            for method in ("GET", "POST"):
                out.append(((("__name__", "http_requests_total"), ("code", code), ("handler", h),
                             ("method", method)), "counter"))
    for h in _HANDLERS[:2]:
        for le in _LE:
            out.append(((("__name__", "http_request_duration_seconds_bucket"), ("handler", h), ("le", le)),
                        "counter"))
        out.append(((("__name__", "http_request_duration_seconds_sum"), ("handler", h)), "counter"))
        out.append(((("__name__", "http_request_duration_seconds_count"), ("handler", h)), "counter"))
    out.append(((("__name__", "up"),), "up"))
    return out


TEMPLATE = _template()  # immutable after import: a tuple-of-tuples template, not state
SERIES_PER_TARGET = len(TEMPLATE)


@dataclass(frozen=True)
class Config:
    """Knobs of a run; every field can come from a ``LOADTEST_<NAME>`` environment variable."""

    remote_write_url: str = "http://127.0.0.1:19291/api/v1/receive"
    query_url: str = "http://127.0.0.1:10902"
    series: int = 10_000            # active series over all writers and tenants
    interval: float = 15.0          # seconds between two samples of a series (scrape interval)
    per_request: int = 500          # samples per remote-write request
    churn: float = 0.01             # fraction of targets replaced per interval
    tenants: int = 1                # tenants, written round-robin by writer (THANOS-TENANT header)
    writers: int = 2                # remote-write users (each owns a block of targets, like a shard)
    queriers: int = 1               # query users
    query_wait: float = 2.0         # seconds between two queries of one query user
    range_minutes: float = 15.0     # range-query window
    range_step: float = 15.0        # range-query step, seconds

    @classmethod
    def from_env(cls, **overrides: object) -> "Config":
        vals: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"LOADTEST_{f.name.upper()}")
            if raw is not None:
                vals[f.name] = type(getattr(cls, f.name))(raw)
        vals.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**vals)

    @property
    def samples_per_second(self) -> float:
        return self.series / self.interval


def tenant_name(i: int) -> str:
    return f"tenant-{i}"


class WriterShard:
    """The targets one writer owns and the requests of its next scrape round.

    Like a Prometheus remote-write shard: it sends its rounds in order, so no series ever goes
    back in time; a round's samples all carry the wall-clock time of the round's start.
    """

    def __init__(self, cfg: Config, index: int) -> None:
        targets = max(1, round(cfg.series / SERIES_PER_TARGET))
        per_writer = -(-targets // cfg.writers)
        self.cfg, self.index = cfg, index
        self.tenant = tenant_name(index % cfg.tenants)
        self.targets = list(range(index * per_writer, min(targets, (index + 1) * per_writer)))
        self.generation = {t: 0 for t in self.targets}
        self.rng = np.random.default_rng(index)
        n = len(self.targets) * SERIES_PER_TARGET
        self.kinds = np.array([k for _, k in TEMPLATE] * len(self.targets))
        self.values = np.where(self.kinds == "gauge", 8e9, 0.0) + np.where(self.kinds == "up", 1.0, 0.0)
        self.values = self.values + self.rng.integers(0, 1000, n) * (self.kinds == "counter")
        self.last_ts = 0
        self.round = 0
        self._labels = self._all_labels()

    def _target_labels(self, t: int) -> tuple[tuple[str, str], ...]:
        gen = self.generation[t]
        return (("cluster", "eu-west-1"), ("instance", f"10.{t // 250 % 256}.{t % 250}.{gen % 250}:9100"),
                ("job", "shop"), ("namespace", f"ns-{t % 7}"), ("pod", f"shop-{t}-{gen}"))

    def _all_labels(self) -> list[tuple[tuple[str, str], ...]]:
        out = []
        for t in self.targets:
            base = self._target_labels(t)
            for extra, _ in TEMPLATE:
                out.append(tuple(sorted(base + extra)))
        return out

    def _churn(self) -> int:
        """Replaces ``churn`` of the targets (rotating), returning how many series were replaced."""
        k = int(round(self.cfg.churn * len(self.targets)))
        if k == 0:
            return 0
        start = self.round * k % len(self.targets)
        for j in range(start, start + k):
            t = self.targets[j % len(self.targets)]
            self.generation[t] += 1
            base = self._target_labels(t)
            off = (j % len(self.targets)) * SERIES_PER_TARGET
            for i, (extra, _) in enumerate(TEMPLATE):
                self._labels[off + i] = tuple(sorted(base + extra))
        return k * SERIES_PER_TARGET

    def next_round(self) -> Iterator[tuple[int, bytes]]:
        """Yields (samples, snappy payload) for every request of one scrape round."""
        if self.round:
            self._churn()
        self.round += 1
        ts = max(int(time.time() * 1000), self.last_ts + 1)
        self.last_ts = ts
        n = len(self._labels)
        inc = self.rng.integers(0, 20, n) * (self.kinds == "counter")
        self.values = self.values + inc
        gauge = self.kinds == "gauge"
        self.values[gauge] = np.round(8e9 + self.rng.normal(0, 1e8, int(gauge.sum())), -3)
        t_arr = np.array([ts], dtype=np.int64)
        for lo in range(0, n, self.cfg.per_request):
            hi = min(lo + self.cfg.per_request, n)
            body = encode_write_request((self._labels[i], t_arr, self.values[i:i + 1]) for i in range(lo, hi))
            yield hi - lo, snappy_compress(body)


def dashboard_queries() -> list[tuple[str, str, dict[str, str]]]:
    """(name, API path, params) of a Grafana-like dashboard refresh; times are filled at send time."""
    exprs = [
        ("cpu by mode", "sum by (mode) (rate(node_cpu_seconds_total[1m]))", "range"),
        ("p99 latency", "histogram_quantile(0.99, sum by (le, handler) "
                        "(rate(http_request_duration_seconds_bucket[1m])))", "range"),
        ("error ratio", 'sum(rate(http_requests_total{code="500"}[1m])) / sum(rate(http_requests_total[1m]))',
         "range"),
        ("memory available", "avg(node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)", "range"),
        ("top pods by rps", "topk(5, sum by (pod) (rate(http_requests_total[1m])))", "instant"),
        ("targets up", "count by (job, tenant_id) (up == 1)", "instant"),
        ("one pod cpu", 'sum by (mode) (rate(node_cpu_seconds_total{pod="shop-0-0"}[1m]))', "range"),
    ]
    return [(name, "query_range" if kind == "range" else "query", {"query": q}) for name, q, kind in exprs]


def query_params(kind: str, params: dict[str, str], range_minutes: float, step: float) -> dict[str, str]:
    now = time.time()
    out = dict(params)
    if kind == "query_range":
        out.update(start=f"{now - range_minutes * 60:.3f}", end=f"{now:.3f}", step=str(step))
    else:
        out["time"] = f"{now:.3f}"
    return out
