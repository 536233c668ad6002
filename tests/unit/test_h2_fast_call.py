"""The gRPC server's usual-call steps (storeapi._h2fast, H2 ``_Connection._on_call``) against
the general path they stand in for: the same answer bytes and grpc_server_* counts for usual,
refused, compressed, oversize, truncated and undecodable calls, with the fast path taken in
the usual one; and the C steps equal to their Python counterparts on random and hostile
input, never crashing."""
from __future__ import annotations

import asyncio
import random
import struct

import grpc
import pytest
from prometheus_client import CollectorRegistry

from storeapi import grpc_codec, rpc_pb2
from storeapi._h2fast import grpc_timeout, messages, reply, unary_message
from storeapi.grpcmetrics import server_metrics
from storeapi.h2frames import (DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, frame, literal,
                               settings_frame, split_frames)
from storeapi.h2server import H2GrpcServer, _Abort, _Connection, _Stream


# --- the C steps against Python ------------------------------------------------------------


class _Server:
    max_message_bytes = 1 << 20


class _Conn:
    _server = _Server()


def _python_message(body: bytes, encoding: str | None = None) -> bytes | str:
    """What the general path (``_Connection._message``) makes of ``body``: the message, or
    the status it aborts with."""
    st = _Stream({} if encoding is None else {"grpc-encoding": encoding}, bytearray(body))
    try:
        return _Connection._message(_Conn(), st)
    except _Abort as a:
        return f"{a.code.name}: {a.details}"


def _bodies(rng: random.Random) -> list[bytes]:
    msg = rng.randbytes(rng.choice([0, 1, 7, 300]))
    prefix = struct.pack(">BI", 0, len(msg))
    return [prefix + msg, b"", b"\0", prefix[:4], prefix + msg + b"x", (prefix + msg)[:-1],
            b"\1" + prefix[1:] + msg, b"\0\xff\xff\xff\xff" + msg, b"\2" + prefix[1:] + msg,
            rng.randbytes(rng.randrange(12)), b"\0\x80\0\0\0" + msg]


def test_unary_message_in_c_takes_only_what_the_python_path_takes_as_is():
    rng = random.Random(7)
    for _ in range(300):
        for body in _bodies(rng):
            for arg in (body, bytearray(body), memoryview(body)):
                got = unary_message(arg)
                if got is not None:
                    assert type(got) is bytes and got == _python_message(body)
                else:  # the general path answers it: a status, or a compressed message
                    assert body[:1] not in (b"\0",) or isinstance(_python_message(body), str)
    assert unary_message(b"\0\0\0\0\0") == b""
    with pytest.raises(TypeError):
        unary_message("text")


def _reply_reference(sid: int, headers: bytes, data: bytes, trailers: bytes) -> bytes:
    return (frame(HEADERS, END_HEADERS, sid, headers) + frame(DATA, 0, sid, data)
            + frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers))


def test_reply_in_c_matches_the_frames_built_in_python():
    rng = random.Random(11)
    for _ in range(300):
        sid = rng.choice([1, 3, 255, 65_537, (1 << 31) - 1])
        parts = [rng.randbytes(rng.choice([0, 1, 40, 16_384, 70_000])) for _ in range(3)]
        assert reply(sid, *parts) == _reply_reference(sid, *parts)
    assert reply(1, bytearray(b"h"), memoryview(b"d"), b"t") == _reply_reference(1, b"h", b"d", b"t")
    for bad in ((1, b"h", b"d"), (1, "h", b"d", b"t"), (-1, b"", b"", b""), (1 << 31, b"", b"", b"")):
        with pytest.raises((TypeError, ValueError, OverflowError)):
            reply(*bad)
    with pytest.raises(ValueError):
        reply(1, b"", bytes(1 << 24), b"")


def test_messages_in_c_match_the_python_prefixes():
    rng = random.Random(5)
    for _ in range(300):
        msgs = [rng.randbytes(rng.choice([0, 1, 9, 1000])) for _ in range(rng.randrange(5))]
        want = b"".join(struct.pack(">BI", 0, len(m)) + m for m in msgs)
        assert messages(msgs) == want
        assert messages([bytearray(m) for m in msgs]) == want
    for bad in ((b"x",), [b"x", "y"], [b"x", None], "xy", None):
        with pytest.raises(TypeError):
            messages(bad)


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def _timeout_reference(value: str) -> float | None:
    """grpc-timeout as the Python server parsed it before the C step."""
    digits = value[:-1]
    if not 0 < len(digits) <= 8 or not digits.isascii() or not digits.isdigit() \
            or value[-1] not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[value[-1]]


def test_grpc_timeout_in_c_matches_the_python_parse():
    rng = random.Random(3)
    alphabet = "0123456789HMSmunx ٣+-.é\U0001f600"
    samples = ["", "S", "5S", "250m", "99999999n", "100000000S", "00000001H", "1٣S", "5s",
               " 5S", "5S ", "-1S", "1.5S", "120000m", "7u", "\U0001f600S"]
    samples += ["".join(rng.choices(alphabet, k=rng.randrange(11))) for _ in range(3000)]
    samples += [str(rng.randrange(10 ** rng.randrange(1, 10))) + rng.choice("HMSmun")
                for _ in range(3000)]
    for v in samples:
        assert grpc_timeout(v) == _timeout_reference(v), v
    with pytest.raises(TypeError):
        grpc_timeout(b"5S")


def test_memo_key_chars_count_names_and_values():
    from storeapi.server import _key_chars
    key = ((0, "job", "api"), (2, "__name__", "a.*b"), (1, "", ""))
    assert _key_chars(key) == sum(len(n) + len(v) for _, n, v in key) == 18
    assert _key_chars(()) == 0


def _outcome(fn, pbs) -> object:
    try:
        return [(m.type, m.name, m.value, m.matches("a"), m.matches("")) for m in fn(pbs)]
    except ValueError as e:
        return f"{type(e).__name__}: {e}"


def test_matchers_from_fields_equals_the_checked_loop_on_good_and_bad_sets():
    from storeapi.convert import _checked_matchers, matchers_from_fields
    rng = random.Random(9)
    values = ["", "a", "a.*", "(", "[z-a]", "x|", "\\d+", "a{2,1}", "(?P<n>a)"]
    for _ in range(2000):
        fields = [(rng.choice([0, 1, 2, 3, 3, 2, 7]), rng.choice(["job", "__name__", ""]),
                   rng.choice(values)) for _ in range(rng.randrange(4))]
        assert _outcome(matchers_from_fields, fields) == _outcome(_checked_matchers, fields)


# --- the fast path against the general path, over a socket ------------------------------------

_BAD_PB = b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field far beyond the message


async def _echo(req: bytes, context) -> bytes:
    return req[::-1]


async def _frames(req: bytes, context):
    for i in range(len(req) % 4):
        yield bytes([i]) * (i + 1)


async def _decoded(req: rpc_pb2.SeriesRequest, context) -> bytes:
    return b"%d" % req.min_time


def _handlers() -> list:
    return [grpc.method_handlers_generic_handler("t.T", {
        "Unary": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.unary_stream_rpc_method_handler(_frames),
        "Decoded": grpc.unary_unary_rpc_method_handler(
            _decoded, rpc_pb2.SeriesRequest.FromString)})]


def _call(sid: int, path: str, body: bytes, ctype: str = "application/grpc",
          encoding: str | None = None) -> bytes:
    block = (b"\x83\x86" + literal(4, path) + literal(1, "x") + literal(b"content-type", ctype)
             + (literal(b"grpc-encoding", encoding) if encoding else b""))
    return frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, body)


def _msg(payload: bytes, flag: int = 0) -> bytes:
    return struct.pack(">BI", flag, len(payload)) + payload


CASES = {
    "unary": ("/t.T/Unary", _msg(b"abc"), {}),
    "stream": ("/t.T/Stream", _msg(b"abc"), {}),
    "stream, no message": ("/t.T/Stream", _msg(b"abcd"), {}),
    "decoded": ("/t.T/Decoded", _msg(rpc_pb2.SeriesRequest(min_time=42).SerializeToString()), {}),
    "bad protobuf": ("/t.T/Decoded", _msg(_BAD_PB), {}),
    "unknown method": ("/t.T/Nope", _msg(b"abc"), {}),
    "not grpc": ("/t.T/Unary", _msg(b"abc"), {"ctype": "text/plain"}),
    "unknown encoding": ("/t.T/Unary", _msg(b"abc"), {"encoding": "br"}),
    "snappy": ("/t.T/Unary", _msg(grpc_codec.compress(grpc_codec.SNAPPY, b"abc"), 1),
               {"encoding": "snappy"}),
    "flagged, identity": ("/t.T/Unary", _msg(b"abc", 1), {}),
    "oversize": ("/t.T/Unary", _msg(bytes(3000)), {}),
    "huge length": ("/t.T/Unary", b"\0\xff\xff\xff\xff" + b"abc", {}),
    "truncated": ("/t.T/Unary", _msg(b"abc")[:-1], {}),
    "two messages": ("/t.T/Unary", _msg(b"abc") + _msg(b"d"), {}),
    "empty body": ("/t.T/Unary", b"", {}),
}


async def _exchange(case: str, taken: list[bool]) -> tuple[list, dict]:
    """The frames a server answers one case's call with (sent as a second call, so its header
    block is known and the read can be taken whole), and its grpc_server_* counts."""
    path, body, kw = CASES[case]
    metrics = server_metrics(CollectorRegistry())
    srv = H2GrpcServer(max_message_bytes=2048, metrics=metrics)
    srv.add_generic_rpc_handlers(_handlers())
    port = await srv.bind("127.0.0.1:0")
    await srv.start()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    got = bytearray()

    async def answered(sid: int) -> None:
        while not any(f[2] == sid and (f[0] == HEADERS and f[1] & END_STREAM or f[0] == 3)
                      for f in split_frames(got, 1 << 24)[0]):
            got.extend(await asyncio.wait_for(r.read(65536), 10))

    try:
        w.write(PREFACE + settings_frame({}))
        for sid in (1, 3):
            await asyncio.sleep(0.05)  # each call a read of its own
            w.write(_call(sid, path, body, **kw))
            await answered(sid)
    finally:
        w.close()
        await srv.stop(0)
    frames = [(f[0], f[1], f[2], bytes(f[3])) for f in split_frames(got, 1 << 24)[0]]
    counts = {k: (m.started, m.received, m.sent, dict(m.handled))
              for k, m in metrics._methods.items()}
    return [f for f in frames if f[2] == 3], counts


@pytest.mark.parametrize("case", list(CASES))
def test_whole_calls_answer_as_the_three_step_path(case, monkeypatch):
    taken: list[bool] = []
    fast_call = _Connection._on_call

    def spy(self, *call):
        taken.append(fast_call(self, *call))
        return taken[-1]

    monkeypatch.setattr(_Connection, "_on_call", spy)
    fast = asyncio.run(_exchange(case, taken))
    fast_taken = list(taken)
    monkeypatch.setattr(_Connection, "_on_call", lambda self, *call: False)
    general = asyncio.run(_exchange(case, taken))
    assert fast == general
    assert fast[0], "no answer"
    # the second call's read was whole; the fast path took every call it can start
    assert len(fast_taken) == 1
    refused = case in ("not grpc", "unknown encoding", "oversize")
    assert fast_taken == [not refused]


def test_the_usual_call_answers_through_the_c_steps(monkeypatch):
    """A usual streamed call takes the C message, the C framing and the C reply."""
    import storeapi.h2server as h2server
    import storeapi.h2serverconn as h2serverconn
    used: list[str] = []

    def spy(name, fn):
        def f(*a):
            used.append(name)
            return fn(*a)
        return f

    monkeypatch.setattr(h2server, "unary_message", spy("message", unary_message))
    monkeypatch.setattr(h2server, "messages", spy("messages", messages))
    monkeypatch.setattr(h2serverconn, "reply", spy("reply", reply))
    frames, counts = asyncio.run(_exchange("stream", []))
    assert used == ["message", "messages", "reply"] * 2
    assert frames[1][3] == messages([b"\0", b"\1\1", b"\2\2\2"])
    (_, _, sent, handled), = counts.values()
    assert sent == 6 and handled == {grpc.StatusCode.OK.value: 2}
