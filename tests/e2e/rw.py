"""A tiny remote-write client for tests: encode, snappy, POST."""
from __future__ import annotations

import numpy as np
import requests

from receiver.remotewrite import encode_write_request, snappy_compress

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def body(series) -> bytes:
    return snappy_compress(encode_write_request(
        (tuple(lbls), np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=np.float64))
        for lbls, ts, vals in series))


def push(url: str, series, tenant: str | None = None, timeout: float = 30) -> requests.Response:
    headers = dict(HEADERS)
    if tenant:
        headers["THANOS-TENANT"] = tenant
    return requests.post(url, data=body(series), headers=headers, timeout=timeout)


def query(api: str, q: str, t: float) -> list:
    r = requests.get(f"{api}/query", params={"query": q, "time": t}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]


def raw_samples(api: str, selector: str, t: float, window: str) -> dict:
    """Every raw sample of matching series in (t-window, t], keyed by labels."""
    out = {}
    for s in query(api, f"{selector}[{window}]", t):
        out[tuple(sorted(s["metric"].items()))] = [(p[0], p[1]) for p in s["values"]]
    return out
