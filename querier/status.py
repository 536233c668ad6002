"""Prometheus's ``/api/v1/status/*`` answers for the querier, in Prometheus 3.x's shapes.

``buildinfo`` reports a Prometheus 3 version (as the API level we answer to: Grafana's
Prometheus data source picks query features by the version it reads, and a ``0.x`` version
made it treat us as an ancient server); the revision names promring and its own version.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import socket
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import yaml
from prometheus_client import CollectorRegistry

from .config import QueryConfig

PROMETHEUS_API_VERSION = "3.0.0"
TSDB_STATUS_LIMIT = 10
# status/tsdb counts the series of the stores over this recent window ("the head")...
HEAD_WINDOW_MS = 2 * 3600 * 1000
# ...and stops counting after this many, so the endpoint stays cheap on a big installation.
TSDB_STATUS_MAX_SERIES = 200_000


def promring_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("promring")
    except PackageNotFoundError:
        return "unknown"


def rfc3339(t: float, nanos: bool = True) -> str:
    """Go's time.RFC3339Nano (trailing zeros cut) or RFC3339, in UTC."""
    dt = datetime.fromtimestamp(t, timezone.utc)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos and dt.microsecond:
        base += ("." + f"{dt.microsecond:06d}".rstrip("0"))
    return base + "Z"


@dataclasses.dataclass
class ProcessInfo:
    """What runtimeinfo reports that is fixed at start."""
    start_time: float = dataclasses.field(default_factory=time.time)
    cwd: str = dataclasses.field(default_factory=os.getcwd)


def buildinfo() -> dict:
    return {"version": PROMETHEUS_API_VERSION, "revision": f"promring-{promring_version()}",
            "branch": "", "buildUser": "", "buildDate": "",
            "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}"}


def config_yaml(cfg: QueryConfig) -> dict:
    """The effective querier configuration as YAML (Prometheus: its config file)."""
    fields = {k: sorted(v) if isinstance(v, (set, frozenset)) else v
              for k, v in dataclasses.asdict(cfg).items() if k != "flags"}
    return {"yaml": yaml.safe_dump(fields, sort_keys=True)}


# Registry samples that say something about the ingestors' heads (present in ``promring up``).
HEAD_GAUGES = {"prometheus_tsdb_head_series": "headSeries",
               "promring_head_chunk_bytes": "headChunkBytes",
               "prometheus_tsdb_head_samples_appended_total": "samplesAppended"}


def head_stats(registry: CollectorRegistry | None) -> dict[str, int]:
    """HEAD_GAUGES summed over their label sets (tenants); absent ones are left out."""
    sums: dict[str, int] = {}
    for family in registry.collect() if registry is not None else ():
        for sample in family.samples:
            key = HEAD_GAUGES.get(sample.name)
            if key is not None:
                sums[key] = sums.get(key, 0) + int(sample.value)
    return sums


def process_stats() -> dict:
    """The Python process's own figures, for the UI's status page (beside Prometheus's)."""
    out: dict = {"pythonVersion": platform.python_version(), "pid": os.getpid(),
                 "cpuCount": os.cpu_count(), "threadCount": threading.active_count()}
    try:
        out["openFDs"] = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/statm") as f:
            out["residentMemoryBytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    return out


def process_status(registry: CollectorRegistry | None) -> dict:
    """promring's own ``/api/v1/status/process``: the process's and the heads' figures, kept out
    of runtimeinfo so that one answers in exactly Prometheus's shape."""
    return {**process_stats(), **head_stats(registry)}


def runtimeinfo(info: ProcessInfo, cfg: QueryConfig) -> dict:
    return {"startTime": rfc3339(info.start_time), "CWD": info.cwd,
            "hostname": socket.gethostname(), "serverTime": rfc3339(time.time()),
            "reloadConfigSuccess": True, "lastConfigTime": rfc3339(info.start_time, nanos=False),
            "corruptionCount": 0, "goroutineCount": threading.active_count(),
            "GOMAXPROCS": os.cpu_count() or 1, "GOMEMLIMIT": (1 << 63) - 1,
            "GOGC": os.environ.get("GOGC", ""), "GODEBUG": os.environ.get("GODEBUG", ""),
            "storageRetention": cfg.storage_retention}


def _top(counts: Counter, limit: int) -> list[dict]:
    return [{"name": k, "value": v} for k, v in
            sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def tsdb_status(series_labels: list, mint: int, maxt: int, limit: int) -> dict:
    """Prometheus's TSDB status over ``series_labels`` (label tuples of the recent series):
    head statistics and the top-``limit`` cardinality lists. Not a hot path; bounded by
    TSDB_STATUS_MAX_SERIES upstream."""
    by_name: Counter = Counter()
    pairs: Counter = Counter()
    values: dict[str, set] = {}
    memory: Counter = Counter()
    for lbls in series_labels:
        for k, v in lbls:
            if k == "__name__":
                by_name[v] += 1
            pairs[f"{k}={v}"] += 1
            values.setdefault(k, set()).add(v)
    for pair in pairs:
        k, _, v = pair.partition("=")
        memory[k] += len(v)
    return {"headStats": {"numSeries": len(series_labels), "numLabelPairs": len(pairs),
                          "chunkCount": 0, "minTime": mint, "maxTime": maxt},
            "seriesCountByMetricName": _top(by_name, limit),
            "labelValueCountByLabelName": _top(Counter({k: len(v) for k, v in values.items()}), limit),
            "memoryInBytesByLabelName": _top(memory, limit),
            "seriesCountByLabelValuePair": _top(pairs, limit)}
