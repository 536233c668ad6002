"""``promring query``'s HTTP answers next to Thanos v0.42.4's querier, where a client can tell:
which Accept-Encoding gets gzip (a small and a large answer), Vary, and the 405 of HEAD or
another method the route does not take (status, Allow, body)."""
from __future__ import annotations

import gzip
from pathlib import Path

import requests

from harness import query_process
from test_thanos_interop import STARTUP_S, thanos

ENCODINGS = ["gzip", "deflate", "gzip;q=0", "GZIP", "br, gzip", "deflate, gzip", "*",
             "identity", "gzip; q=0.5", "x-gzip"]
SMALL = {"query": "1"}
LARGE = {"query": 'label_replace(vector(1), "x", "' + "a" * 1500 + '", "", "")'}


def _shape(base: str) -> dict:
    out = {}
    for name, params in (("small", SMALL), ("large", LARGE)):
        for ae in ENCODINGS:
            r = requests.get(f"{base}/api/v1/query", params=params,
                             headers={"Accept-Encoding": ae}, stream=True, timeout=30)
            raw = r.raw.read(decode_content=False)
            coding = r.headers.get("Content-Encoding")
            body = gzip.decompress(raw) if coding == "gzip" else raw
            out[name, ae] = (r.status_code, coding, r.headers.get("Vary"),
                             b'"resultType"' in body)
    for method, path in (("HEAD", "/api/v1/query"), ("PUT", "/api/v1/query"),
                         ("HEAD", "/api/v1/labels"), ("HEAD", "/api/v1/status/buildinfo"),
                         ("POST", "/api/v1/status/buildinfo")):
        r = requests.request(method, base + path, timeout=30)
        out[method, path] = (r.status_code, r.headers.get("Allow"), r.headers.get("Content-Type"),
                             r.content)
    return out


def test_http_answers_match_thanos_querier(tmp_path: Path) -> None:
    theirs = thanos(tmp_path, "thanos-query", "query").start(STARTUP_S)
    try:
        ours = query_process(tmp_path, "query", []).start()
        try:
            want, got = _shape(theirs.url("http", "")), _shape(ours.url("http", ""))
        finally:
            ours.stop()
    finally:
        theirs.stop()
    assert want["large", "gzip"][1] == "gzip" and want["small", "gzip"][1] is None
    assert want["HEAD", "/api/v1/query"][0] == 405
    assert got == want
