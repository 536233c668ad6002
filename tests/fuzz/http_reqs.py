"""Hostile raw HTTP/1.1 requests, built with hypothesis, for the querier's HTTP API and the
receiver's remote-write edge of ``promring up``: what the client library would never send.

The PromQL side (deep nesting, catastrophic regexes, huge grids) is tests/e2e/hostile_gen.py's
(seeded by hypothesis here); this adds the HTTP side: duplicate and huge parameters, thousands
of ``match[]``, broken percent-encoding and UTF-8, parameters in query string and body at once,
extreme start/end/step/limit/timeout values, hostile label names in ``label/<name>/values``,
odd methods, content types, content encodings and headers. Every request is complete (its
Content-Length true), so the server owes it an answer.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from hostile_gen import EXTREME_NUMBERS, T_DATA, Generator  # noqa: E402

API_PATHS = ["query", "query_range", "series", "labels", "label/{name}/values", "query_exemplars",
             "metadata", "targets/metadata", "status/buildinfo", "status/flags", "rules", "alerts",
             "targets", "status/tsdb", "format_query", "parse_query", "query/explain"]
LABEL_NAMES = ["__name__", "job", "v", "", "%ff", "%00", "a%2Fb", "%zz", "..", "x" * 5000, "💥",
               "U__a_2e_b", "%E2%82"]
PARAMS = ["query", "time", "start", "end", "step", "match[]", "timeout", "limit", "dedup",
          "partial_response", "max_source_resolution", "engine", "lookback_delta", "stats",
          "replicaLabels[]", "storeMatch[]", "analyze", "metric", "x"]
ODD_VALUES = EXTREME_NUMBERS + [
    "", "%", "%zz", "%ff%fe", "%00", "\u00b2", "1e309", "-1e309", "9223372036854775807",
    "-9223372036854775808", "99999999999999999999999", "2024-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "1s", "-1s", "1y", "100000y", "0s", "true", "1", "0", "x" * 70_000,
    "{", 'hm{v=~"(a+)+b"}', "up", "{__name__=~\".*\"}", "hm"]


@dataclass(frozen=True)
class RawRequest:
    port: str  # "http" (querier) or "remote_write"
    data: bytes

    def __repr__(self) -> str:
        more = "..." if len(self.data) > 600 else ""
        return f"RawRequest({self.port}, {self.data[:600]!r}{more})"


def _encode(pairs: list[tuple[str, str]], raw: bool) -> str:
    """A query string; ``raw`` leaves values unescaped (broken percent-encoding stays broken)."""
    if raw:
        return "&".join(f"{k}={v}" for k, v in pairs if "&" not in v and " " not in v)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)


@st.composite
def _params(draw, path: str) -> list[tuple[str, str]]:
    seed = draw(st.integers(0, 1 << 30))
    g_path, base = Generator(seed).query()
    pairs = list(base.items()) if draw(st.integers(0, 3)) or g_path == path else []
    pairs += draw(st.lists(st.tuples(st.sampled_from(PARAMS), st.sampled_from(ODD_VALUES)),
                           max_size=6))
    if draw(st.integers(0, 9)) == 0:  # thousands of match[] (or of one duplicated parameter)
        name = draw(st.sampled_from(["match[]", "query", "start"]))
        pairs += [(name, f'{{v="v{i}"}}')
                  for i in range(draw(st.integers(100, 20_000)))]
    return pairs


_METHODS = ["GET", "POST", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
            "CONNECT", "get", "X" * 50]
_CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=zz", "application/json", "text/plain", "",
                  "application/x-www-form-urlencoded; charset=latin-1", "application/x-protobuf"]
_ENCODINGS = [None, None, None, "gzip", "snappy", "deflate", "br", "zstd", "identity", "gzip, gzip"]


def _request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("utf-8", "surrogateescape") + \
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body


@st.composite
def api_request(draw) -> RawRequest:
    path = draw(st.sampled_from(API_PATHS))
    if "{name}" in path:
        path = path.format(name=draw(st.sampled_from(LABEL_NAMES)))
    pairs = draw(_params(path))
    raw = draw(st.integers(0, 5)) == 0
    method = draw(st.sampled_from(_METHODS))
    in_body = draw(st.integers(0, 3))  # 0: query string only, 1..: body, 3: split both ways
    query = _encode(pairs if in_body in (0, 3) else [], raw)
    body = _encode(pairs if in_body else [], raw).encode("utf-8", "surrogateescape")
    if draw(st.integers(0, 7)) == 0:
        body = draw(st.binary(max_size=300))
    headers = [("Content-Type", draw(st.sampled_from(_CONTENT_TYPES)))]
    enc = draw(st.sampled_from(_ENCODINGS))
    if enc:
        headers.append(("Content-Encoding", enc))
    headers += draw(st.lists(st.tuples(
        st.sampled_from(["Accept-Encoding", "Accept", "X-Scope-OrgID", "THANOS-TENANT",
                         "Cache-Control", "Expect", "Transfer-Encoding", "Range", "Origin"]),
        st.sampled_from(["gzip", "*/*", "identity;q=0", "x" * 4000, "", "100-continue",
                         "tenant", "../../x", "bytes=0-1", "\u00ff"])), max_size=3))
    target = f"/api/v1/{path}" + (f"?{query}" if query else "")
    return RawRequest("http", _request(method, target, headers, body))


@st.composite
def receive_request(draw) -> RawRequest:
    """Remote write's edge: methods, paths, content types/encodings, versions, tenants."""
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "HEAD", "OPTIONS"]))
    path = draw(st.sampled_from(["/api/v1/receive", "/api/v1/receive?x=1", "/api/v1/write",
                                 "/api/v1/receive/", "//api/v1/receive", "/api/v1/otlp"]))
    headers = draw(st.lists(st.tuples(
        st.sampled_from(["Content-Type", "Content-Encoding", "X-Prometheus-Remote-Write-Version",
                         "THANOS-TENANT", "X-Scope-OrgID", "Transfer-Encoding", "Expect"]),
        st.sampled_from(["application/x-protobuf", "application/x-protobuf;proto=io.prometheus"
                         ".write.v2.Request", "application/x-protobuf;proto=x", "text/plain",
                         "snappy", "gzip", "zstd", "0.1.0", "2.0.0", "9", "", "x" * 300,
                         "../etc", "\u00ff", "100-continue", "a,b"])), max_size=5))
    body = draw(st.one_of(st.binary(max_size=200), st.just(b"\xff\x06\x00\x00sNaPpY"),
                          st.just(b"\x00\x00")))
    return RawRequest("remote_write", _request(method, path, headers, body))


def hostile_http_requests() -> st.SearchStrategy[RawRequest]:
    return st.one_of(api_request(), api_request(), api_request(), receive_request())


__all__ = ["RawRequest", "T_DATA", "hostile_http_requests"]
