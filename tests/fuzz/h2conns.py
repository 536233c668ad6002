"""Hostile HTTP/2 gRPC connections, built with hypothesis, for our own gRPC server
(storeapi.h2server): a connection is a list of byte chunks a client writes, in order.

Each chunk is one of: a connection preface (right, truncated, garbage, HTTP/1.1), SETTINGS
(huge or zero windows, bad frame sizes, huge header tables), a request's HEADERS (valid HPACK
from ``hpack.Encoder`` with hostile values, or hostile HPACK bytes: table size updates, indexes
out of range, huge literal lengths, Huffman garbage), CONTINUATION floods, DATA with gRPC
messages (valid StoreAPI requests with hostile matchers and time ranges, protobuf garbage,
deep nesting, bad length prefixes, compressed flags), RST_STREAM / PING / PRIORITY /
WINDOW_UPDATE / GOAWAY / unknown frames, on stream ids reused, even or out of order.
"""
from __future__ import annotations

import hpack
from hypothesis import strategies as st

from rwbytes import ld
from storeapi import rpc_pb2, types_pb2
from storeapi.h2frames import (CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS,
                               PADDED, PING, PREFACE, PRIORITY, PRIORITY_FLAG, RST_STREAM,
                               SETTINGS, WINDOW_UPDATE, frame, hpack_int)

METHODS = ["/thanos.Store/Series", "/thanos.Store/LabelNames", "/thanos.Store/LabelValues",
           "/thanos.Store/Info", "/thanos.info.Info/Info", "/thanos.Store/Nope", "/", "",
           "/thanos.WriteableStore/RemoteWrite"]
INT64 = st.one_of(st.sampled_from([-(1 << 63), (1 << 63) - 1, 0, -1]),
                  st.integers(-(1 << 63), (1 << 63) - 1))
REGEXES = ["(a*)*b", "(a|aa)+$", ".*.*.*.*.*.*.*.*x", "(x+x+)+y", "(", "[", "\\", "a{1000}{1000}",
           "(?P<n>", ".*", "up|.*", "(?i)UP", "\x00", "a" * 5000, "((((((((((a))))))))))"]


def _label_matcher() -> st.SearchStrategy[types_pb2.LabelMatcher]:
    text = st.one_of(st.sampled_from(["__name__", "up", "instance", "", "h1"] + REGEXES),
                     st.text(max_size=50))
    return st.builds(types_pb2.LabelMatcher, type=st.integers(0, 5), name=text, value=text)


def _store_request(path: str) -> st.SearchStrategy[bytes]:
    matchers = st.lists(_label_matcher(), max_size=6)
    many = st.integers(0, 3000).map(  # huge repeated matchers
        lambda n: [types_pb2.LabelMatcher(type=0, name="__name__", value="up")] * n)
    if path.endswith("/Series"):
        msg = st.builds(rpc_pb2.SeriesRequest, min_time=INT64, max_time=INT64,
                        matchers=st.one_of(matchers, many), skip_chunks=st.booleans(),
                        max_resolution_window=INT64, aggregates=st.lists(st.integers(0, 7),
                                                                         max_size=4),
                        limit=INT64, response_batch_size=INT64)
    elif path.endswith("/LabelValues"):
        msg = st.builds(rpc_pb2.LabelValuesRequest, label=st.sampled_from(["", "instance", "x"]),
                        start=INT64, end=INT64, matchers=matchers, limit=INT64)
    elif path.endswith("/LabelNames"):
        msg = st.builds(rpc_pb2.LabelNamesRequest, start=INT64, end=INT64, matchers=matchers,
                        limit=INT64)
    else:
        msg = st.builds(rpc_pb2.SeriesRequest)
    return msg.map(lambda m: m.SerializeToString())


def _deep(depth: int, wire_group: bool) -> bytes:
    """A message nested ``depth`` levels deep in field 3 (matchers): groups or length-delimited."""
    if wire_group:
        return b"\x1b" * depth + b"\x1c" * depth
    body = b""
    for _ in range(depth):
        body = ld(3, body)
    return body


def _message_body(path: str) -> st.SearchStrategy[bytes]:
    return st.one_of(_store_request(path), _store_request(path), st.binary(max_size=300),
                     st.builds(_deep, st.integers(1, 3000), st.booleans()))


@st.composite
def grpc_message(draw, path: str) -> bytes:
    """A length-prefixed gRPC message, its prefix honest or not."""
    body = draw(_message_body(path))
    flag = draw(st.sampled_from([0] * 12 + [1, 2, 255]))
    length = draw(st.one_of(*[st.just(len(body))] * 8, st.integers(0, (1 << 32) - 1),
                            st.sampled_from([0, (1 << 32) - 1, len(body) + 1,
                                             max(0, len(body) - 1)])))
    return bytes((flag,)) + length.to_bytes(4, "big") + body


_HEADER_VALUES = {
    "content-type": ["application/grpc", "application/grpc+proto", "text/html", "",
                     "application/grpc\x00"],
    ":method": ["POST", "GET", "PRI", ""],
    "grpc-timeout": ["1S", "10m", "99999999H", "0n", "S", "1", "x1S", "\u00b2S", "1" * 5000 + "S",
                     "-1S", "1\u0663S", "1.5S", "100000000000000000000000000000n"],
    "grpc-encoding": ["identity", "snappy", "gzip", "deflate", "zstd", "br", "", "x" * 300],
    "te": ["trailers", "gzip"],
    ":scheme": ["http", "https", "ftp"],
}


@st.composite
def request_headers(draw) -> tuple[str, list[tuple[str, str]]]:
    path = draw(st.text(max_size=40) if draw(st.integers(0, 9)) == 0
                else st.sampled_from(METHODS[:5] * 3 + METHODS))
    hdrs = [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "store"), ("content-type", "application/grpc"), ("te", "trailers")]
    for name, values in _HEADER_VALUES.items():
        if draw(st.integers(0, 14)) == 0:  # most calls keep most headers right
            hdrs = [h for h in hdrs if h[0] != name] + [(name, draw(st.sampled_from(values)))]
    if draw(st.integers(0, 9)) == 0:  # duplicated, upper-case or binary metadata
        hdrs += draw(st.lists(st.tuples(st.sampled_from(["x-a", "X-Up", "x-bin", ":path",
                                                          "grpc-timeout", "a" * 1000, ""]),
                                        st.text(max_size=30)), max_size=5))
    if draw(st.integers(0, 15)) == 0:  # a header list beyond the server's 64 KiB
        hdrs.append(("x-big", "v" * draw(st.integers(60_000, 200_000))))
    return path, hdrs


def _hostile_hpack() -> st.SearchStrategy[bytes]:
    huge = st.integers(1 << 20, 1 << 40)
    return st.one_of(
        huge.map(lambda n: hpack_int(n, 5, 0x20)),                   # dynamic table size update
        st.integers(62, 1 << 30).map(lambda n: hpack_int(n, 7, 0x80)),  # index out of range
        st.just(b"\x80"),                                            # index 0
        huge.map(lambda n: b"\x00" + hpack_int(n, 7) + b"abc"),       # huge literal name length
        huge.map(lambda n: b"\x00\x01a" + hpack_int(n, 7, 0x80)),     # huge Huffman value length
        st.binary(min_size=1, max_size=20).map(                       # Huffman garbage
            lambda b: b"\x00\x01a" + hpack_int(len(b), 7, 0x80) + b),
        st.integers(1, 4000).map(lambda n: b"\xff" * n),               # endless integer
        st.integers(1, 2000).map(lambda n: b"\x40\x01a\x01b" * n),     # dynamic-table churn
        st.binary(max_size=200))


@st.composite
def chunk(draw, encoder: hpack.Encoder, next_sid: list[int]) -> bytes:
    """One thing a hostile client writes (one or more frames); mostly on the next stream id
    (``next_sid``), so that the connection lives on to the later chunks."""
    if draw(st.integers(0, 4)):
        sid = next_sid[0]
        next_sid[0] += 2
    else:
        sid = draw(st.one_of(st.sampled_from([1, 3, 2, 0, (1 << 31) - 1, max(0, next_sid[0] - 2)]),
                             st.integers(0, (1 << 32) - 1)))
    # requests most often, so that their answers race what follows; then the frames that
    # only a broken client sends (most of them end the connection)
    kind = draw(st.sampled_from([0, 1, 2] * 4 + list(range(3, 13))))
    if kind <= 2:  # a whole request, maybe with hostile parts
        path, hdrs = draw(request_headers())
        # Huffman-coded when small (hpack's pure-Python Huffman coder takes seconds for 200 KB)
        block = encoder.encode(hdrs, huffman=sum(len(v) for _, v in hdrs) < 4096)
        end = draw(st.integers(0, 5)) == 0
        out = frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block)
        if not end:
            msg = draw(grpc_message(path))
            for i in range(0, max(1, len(msg)), 16384):
                last = i + 16384 >= len(msg)
                out += frame(DATA, END_STREAM if last and draw(st.booleans()) or last and
                             kind < 2 else 0, sid, msg[i:i + 16384])
        return out
    if kind == 3:  # hostile HPACK, maybe split over CONTINUATIONs
        block = draw(_hostile_hpack())
        return frame(HEADERS, END_STREAM | (END_HEADERS if len(block) < 16384 else 0), sid,
                     block[:16384]) + b"".join(
            frame(CONTINUATION, END_HEADERS if i + 16384 >= len(block) else 0, sid,
                  block[i:i + 16384]) for i in range(16384, len(block), 16384))
    if kind == 4:  # CONTINUATION flood, maybe never ended
        n = draw(st.integers(1, 300))
        return frame(HEADERS, 0, sid, encoder.encode([(":method", "POST")])) + \
            frame(CONTINUATION, 0, sid, b"\x40\x01a\x01b" * 50) * n
    if kind == 5:
        pairs = draw(st.lists(st.tuples(st.integers(0, 10),
                                        st.one_of(st.sampled_from([0, 1, 16383, 16384, 1 << 24,
                                                                   (1 << 31) - 1, 1 << 31,
                                                                   (1 << 32) - 1]),
                                                  st.integers(0, (1 << 32) - 1))), max_size=6))
        flags = draw(st.sampled_from([0, 0, 1]))
        return frame(SETTINGS, flags, draw(st.sampled_from([0, 0, 1])),
                     b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs))
    if kind == 6:
        increment = st.integers(0, (1 << 32) - 1).map(lambda n: n.to_bytes(4, "big"))
        return frame(WINDOW_UPDATE, 0, draw(st.sampled_from([0, sid])),
                     draw(st.one_of(increment, st.binary(max_size=6))))
    if kind == 7:
        payload = draw(st.one_of(st.just(b"\0\0\0\x08"), st.binary(max_size=6)))
        return frame(RST_STREAM, 0, sid, payload) * draw(st.integers(1, 200))
    if kind == 8:
        return frame(PING, draw(st.sampled_from([0, 1])), draw(st.sampled_from([0, 0, 1])),
                     draw(st.binary(min_size=8, max_size=8) | st.binary(max_size=12))
                     ) * draw(st.integers(1, 500))
    if kind == 9:
        return frame(GOAWAY, 0, draw(st.sampled_from([0, 1])),
                     draw(st.binary(min_size=8, max_size=16)))
    if kind == 10:  # DATA alone: on idle, closed or reused streams, padded
        sid = max(1, sid - 2) if draw(st.booleans()) else sid
        payload = draw(st.binary(max_size=100))
        flags = draw(st.sampled_from([0, END_STREAM, PADDED, PADDED | END_STREAM]))
        return frame(DATA, flags, sid, payload)
    if kind == 11:  # PRIORITY, PADDED|PRIORITY headers, unknown types
        typ = draw(st.sampled_from([PRIORITY, 10, 11, 0xFF]))
        return frame(typ, draw(st.integers(0, 255)), sid, draw(st.binary(max_size=40)))
    # raw frame header with any length (up to 16 MiB announced) and a short payload
    return draw(st.integers(0, (1 << 24) - 1)).to_bytes(3, "big") + bytes(
        (draw(st.integers(0, 12)), draw(st.sampled_from([0, PADDED, PRIORITY_FLAG, 0xFF])))) + \
        sid.to_bytes(4, "big") + draw(st.binary(max_size=50))


@st.composite
def preface(draw) -> bytes:
    choice = draw(st.integers(0, 40))
    if choice <= 8 or choice > 12:
        return PREFACE
    if choice == 9:
        return PREFACE[:draw(st.integers(0, len(PREFACE) - 1))]
    if choice == 10:
        return b"GET /thanos.Store/Info HTTP/1.1\r\nHost: x\r\n\r\n"
    if choice == 11:
        return b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"  # a TLS ClientHello's start
    return draw(st.binary(min_size=1, max_size=40))


@st.composite
def hostile_connections(draw) -> list[bytes]:
    """What a hostile client writes on one connection, in chunks."""
    encoder = hpack.Encoder()
    if draw(st.booleans()):
        encoder.header_table_size = draw(st.sampled_from([0, 256, 4096]))
    chunks = [draw(preface())]
    if draw(st.integers(0, 3)):
        chunks.append(frame(SETTINGS, 0, 0))
    chunks += draw(st.lists(chunk(encoder, [1]), min_size=1, max_size=8))
    return chunks
