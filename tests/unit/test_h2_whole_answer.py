"""unary_stream_each's whole-answer step (H2Channel._whole) and series_with_warnings without
the _Stubs wrapper: the usual call (one store, the whole answer in one read, status OK) takes
them; every answer, well formed or hostile, gives the same messages, series, errors and
grpc_client_* counts as the general loop (``H2Channel.whole_fast = False``), and never takes
the client down: the next call on the same channel works."""
from __future__ import annotations

import asyncio
import gzip
import random
import re
from collections.abc import Callable

import grpc
import pytest
from prometheus_client import CollectorRegistry

from receiver.tsdb.labels import Matcher, MatchType
from storeapi import rpc_pb2, types_pb2
from storeapi._wire import grpc_messages, whole_messages
from storeapi.client import MalformedFrame, StoreClient
from storeapi.grpcmetrics import client_metrics
from storeapi.h2client import H2Channel, RpcError
from storeapi.h2frames import (DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, RST_STREAM,
                               frame, literal, settings_frame, split_frames)

STREAM = "/t.T/Stream"
OK_HEAD = b"\x88" + literal(b"content-type", "application/grpc")  # :status 200


def _msg(body: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(body).to_bytes(4, "big") + body


def _answer(sid: int, data: bytes, status: str | None = "0", message: str = "",
            encoding: str = "") -> bytes:
    """HEADERS, one DATA frame, trailers: one write (one read at the client)."""
    head = OK_HEAD + (literal(b"grpc-encoding", encoding) if encoding else b"")
    trailers = b"" if status is None else literal(b"grpc-status", status)
    if message:
        trailers += literal(b"grpc-message", message)
    return (frame(HEADERS, END_HEADERS, sid, head) + (frame(DATA, 0, sid, data) if data else b"")
            + frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers))


# name -> the bytes answering stream ``sid``: each answer a store may send, hostile ones too
ANSWERS: dict[str, Callable[[int], bytes]] = {
    "one message": lambda sid: _answer(sid, _msg(b"abc")),
    "two messages": lambda sid: _answer(sid, _msg(b"abc") + _msg(b"")),
    "no message": lambda sid: _answer(sid, b""),
    "two DATA frames": lambda sid: (frame(HEADERS, END_HEADERS, sid, OK_HEAD)
                                    + frame(DATA, 0, sid, _msg(b"ab")[:3])
                                    + frame(DATA, 0, sid, _msg(b"ab")[3:])
                                    + frame(HEADERS, END_HEADERS | END_STREAM, sid,
                                            literal(b"grpc-status", "0"))),
    "trailers later": lambda sid: _answer(sid, _msg(b"abc")),  # (see _serve: split in two)
    "ends inside a message": lambda sid: _answer(sid, _msg(b"abcdef")[:-2]),
    "huge length": lambda sid: _answer(sid, b"\0\xff\xff\xff\xf0" + b"x" * 10),
    "gzip message": lambda sid: _answer(sid, _msg(gzip.compress(b"zipped"), 1),
                                        encoding="gzip"),
    "bad gzip": lambda sid: _answer(sid, _msg(b"not gzip", 1), encoding="gzip"),
    "error status": lambda sid: _answer(sid, _msg(b"abc"), "8", "too%20much"),
    "no status": lambda sid: _answer(sid, _msg(b"abc"), None),
    "bad status": lambda sid: _answer(sid, _msg(b"abc"), "x"),
    "stream reset": lambda sid: (frame(HEADERS, END_HEADERS, sid, OK_HEAD)
                                 + frame(DATA, 0, sid, _msg(b"ab"))
                                 + frame(RST_STREAM, 0, sid, (2).to_bytes(4, "big"))),
    "frame too large": lambda sid: (frame(HEADERS, END_HEADERS, sid, OK_HEAD)
                                    + b"\xff\xff\xff\x00\x00" + sid.to_bytes(4, "big")),
    "bad header block": lambda sid: frame(HEADERS, END_HEADERS | END_STREAM, sid, b"\xff\xff"),
    "DATA on stream 0": lambda sid: (frame(HEADERS, END_HEADERS, sid, OK_HEAD)
                                     + frame(DATA, 0, 0, b"x")),
}


def _server(answers: list[Callable[[int], bytes]], split_trailers: set[int] = frozenset()):
    """A start_server callback answering the n-th call (its request's HEADERS), over all
    connections, with ``answers[n]`` in one write (for a call in ``split_trailers``: its
    trailers in a write of their own)."""
    taken = [0]

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await _serve(answers, r, w, split_trailers, taken)
        except ConnectionError:
            pass
    return serve


async def _serve(answers: list[Callable[[int], bytes]], r: asyncio.StreamReader,
                 w: asyncio.StreamWriter, split_trailers: set[int], taken: list[int]) -> None:
    await r.readexactly(len(PREFACE))
    w.write(settings_frame({}))
    buf = bytearray()
    while data := await r.read(1 << 16):
        buf += data
        frames, used = split_frames(buf, 1 << 24)
        del buf[:used]
        for typ, _, sid, _ in frames:
            n = taken[0]
            if typ != HEADERS or n >= len(answers):
                continue
            taken[0] += 1
            out = answers[n](sid)
            if n in split_trailers:
                cut = len(out) - len(frame(HEADERS, END_HEADERS | END_STREAM, sid,
                                           literal(b"grpc-status", "0")))
                w.write(out[:cut])
                await w.drain()
                await asyncio.sleep(0.05)
                out = out[cut:]
            w.write(out)
        await w.drain()


def _outcome(calls: list) -> list:
    """Each call's messages, or its error's code and details (without the server's port and
    object addresses, which differ between runs)."""
    return [c if isinstance(c, list) else (c.code(), _plain(c.details())) for c in calls]


def _plain(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x", re.sub(r"127\.0\.0\.1:\d+", "ADDR", text))


async def _each_call(name: str, whole_fast: bool, spy: list[str]) -> list:
    """``name``'s answer, then a good one on the same channel (after a connection error: a
    new connection), through unary_stream_each."""
    answers = [ANSWERS[name], ANSWERS["one message"]]
    split = {0} if name == "trailers later" else set()
    return await _calls(answers, split, whole_fast, spy)


async def _calls(answers: list[Callable[[int], bytes]], split: set[int] = frozenset(),
                 whole_fast: bool = True, spy: list[str] | None = None) -> list:
    """One unary_stream_each call per answer on one channel: each one's outcome; ``spy``
    gets "general" for each chunk the general loop takes."""
    srv = await asyncio.start_server(_server(answers, split), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    ch = H2Channel(f"127.0.0.1:{port}", "identity", max_message_bytes=1 << 20)
    ch.whole_fast = whole_fast
    chunk_messages = ch._chunk_messages

    def counted(*args):
        if spy is not None:
            spy.append("general")
        return chunk_messages(*args)

    ch._chunk_messages = counted  # type: ignore[method-assign]
    out: list = []
    try:
        for _ in answers:
            got: list[bytes] = []
            try:
                await ch.unary_stream_each(STREAM, b"1", 10, got.append)
                out.append(got)
            except RpcError as e:
                out.append(e)
    finally:
        await ch.close()
        srv.close()
    return _outcome(out)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_the_usual_answer_is_taken_whole_without_the_general_loop():
    spy: list[str] = []
    assert _run(_each_call("one message", True, spy)) == [[b"abc"], [b"abc"]]
    assert spy == []
    assert _run(_each_call("one message", False, spy)) == [[b"abc"], [b"abc"]]
    assert spy == ["general", "general"]


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_every_answer_gives_the_same_outcome_whole_or_by_the_general_loop(name):
    fast, general = _run(_each_call(name, True, [])), _run(_each_call(name, False, []))
    assert fast == general
    assert fast[-1] == [b"abc"]  # the channel still works after whatever came before


def test_hostile_answers_fail_the_call_with_the_expected_code():
    codes = {name: _run(_each_call(name, True, []))[0] for name in ANSWERS}
    assert codes["huge length"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert codes["ends inside a message"][0] == grpc.StatusCode.INTERNAL
    assert codes["bad gzip"][0] == grpc.StatusCode.INTERNAL
    assert codes["error status"] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too much")
    assert codes["no status"][0] == grpc.StatusCode.UNKNOWN
    assert codes["stream reset"][0] == grpc.StatusCode.INTERNAL
    for name in ("frame too large", "bad header block", "DATA on stream 0"):
        assert codes[name][0] == grpc.StatusCode.UNAVAILABLE, name
    assert codes["gzip message"] == [b"zipped"]
    assert codes["two DATA frames"] == [b"ab"]


# --- series_with_warnings: same series, warnings, errors and metrics as the general path ---

def _series_frame(labels: list[tuple[str, str]], chunks: list[tuple[int, int, bytes]],
                  chunk_type: int = types_pb2.Chunk.XOR) -> bytes:
    s = rpc_pb2.SeriesResponse()
    for n, v in labels:
        s.series.labels.add(name=n, value=v)
    for a, z, data in chunks:
        s.series.chunks.add(min_time=a, max_time=z).raw.CopyFrom(
            types_pb2.Chunk(type=chunk_type, data=data))
    return s.SerializeToString()


def _warning_frame(text: str) -> bytes:
    return rpc_pb2.SeriesResponse(warning=text).SerializeToString()


SERIES_ANSWERS: dict[str, list[bytes]] = {
    "one series": [_series_frame([("__name__", "x"), ("instance", "i-1")],
                                 [(0, 10, b"\0\0")])],
    "split series and a warning": [
        _series_frame([("__name__", "x")], [(0, 10, b"\0\0")]),
        _series_frame([("__name__", "x")], [(11, 20, b"\0\1")]),
        _warning_frame("careful"),
        _series_frame([("__name__", "y")], [(0, 10, b"\0\2")])],
    "histogram chunk": [_series_frame([("a", "b")], [(0, 1, b"\0\0")],
                                      types_pb2.Chunk.HISTOGRAM)],
    "bad protobuf": [b"\x0a\xff\xff\xff\xff\x0f"],
    "truncated series": [_series_frame([("__name__", "x")], [(0, 10, b"\0\0")])[:-3]],
}


async def _series_calls(name: str, whole_fast: bool, spy: list[str] | None = None
                        ) -> tuple[list, dict]:
    frames = SERIES_ANSWERS[name]
    answers = [lambda sid: _answer(sid, b"".join(_msg(f) for f in frames)),
               lambda sid: _answer(sid, _msg(SERIES_ANSWERS["one series"][0]))]
    srv = await asyncio.start_server(_server(answers), "127.0.0.1", 0)
    reg = CollectorRegistry()
    client = StoreClient(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", timeout_s=10,
                         native_histograms=True, metrics=client_metrics(reg))
    ch = client._rpc().channel
    ch.whole_fast = whole_fast
    if spy is not None:
        chunk_messages = ch._chunk_messages
        ch._chunk_messages = lambda *a: spy.append("general") or chunk_messages(*a)
    out: list = []
    try:
        for _ in range(2):
            try:
                out.append(await client.series_with_warnings(
                    0, 100, [Matcher(MatchType.EQ, "__name__", "x")], until=None))
            except (RpcError, MalformedFrame) as e:
                out.append(_plain(repr(e)))
    finally:
        await client.close()
        srv.close()
    labels = {"grpc_type": "server_stream", "grpc_service": "thanos.Store",
              "grpc_method": "Series"}
    counts = {n: reg.get_sample_value(n, labels) for n in (
        "grpc_client_started_total", "grpc_client_msg_sent_total",
        "grpc_client_handling_seconds_count")}
    for code in ("OK", "Internal", "Canceled", "Unknown"):
        counts[code] = reg.get_sample_value("grpc_client_handled_total",
                                            {**labels, "grpc_code": code})
    return out, counts


@pytest.mark.parametrize("name", sorted(SERIES_ANSWERS))
def test_series_with_warnings_gives_the_same_series_errors_and_metrics_either_way(name):
    fast, general = _run(_series_calls(name, True)), _run(_series_calls(name, False))
    assert fast == general
    out, counts = fast
    assert out[-1].series[0].labels == (("__name__", "x"), ("instance", "i-1"))
    assert counts["grpc_client_started_total"] == counts["grpc_client_msg_sent_total"] == 2.0
    assert counts["grpc_client_handling_seconds_count"] == 2.0
    if name.startswith("bad") or name.startswith("truncated"):
        assert out[0].startswith("MalformedFrame") and counts["OK"] == 1.0
    else:
        assert counts["OK"] == 2.0


def test_the_usual_series_call_takes_the_whole_answer_in_one_step():
    spy: list[str] = []
    out, counts = _run(_series_calls("one series", True, spy))
    assert spy == [] and counts["OK"] == 2.0 and len(out[0].series) == 1
    _run(_series_calls("one series", False, spy))
    assert spy == ["general", "general"]


def test_series_with_warnings_merges_split_series_and_keeps_warnings():
    out, _ = _run(_series_calls("split series and a warning", True))
    first = out[0]
    assert [s.labels for s in first.series] == [(("__name__", "x"),), (("__name__", "y"),)]
    assert [c[:2] for c in first.series[0].chunks] == [(0, 10), (11, 20)]
    assert first.warnings == ["careful"]


def _indexed_trailers(sid: int, block: bytes) -> bytes:
    return (frame(HEADERS, END_HEADERS, sid, OK_HEAD) + frame(DATA, 0, sid, _msg(b"abc"))
            + frame(HEADERS, END_HEADERS | END_STREAM, sid, block))


def test_header_blocks_using_the_dynamic_table_are_decoded_in_order_not_looked_up():
    """A literal-only block is looked up once known (_one_stream), unless the dynamic table
    holds entries: then every block goes through the decoder, in order (a block indexing an
    entry an earlier one added decodes to it; the same bytes once decoded to another)."""
    add_status = b"\x40\x0bgrpc-status\x010"  # literal with incremental indexing: entry 62
    status_7 = b"\x40\x0bgrpc-status\x017"  # (a newer entry 62)
    blocks = [literal(b"grpc-status", "0"), literal(b"grpc-status", "0"), add_status,
              b"\xbe", literal(b"grpc-status", "0"), status_7, b"\xbe"]
    answers = [lambda sid, b=b: _indexed_trailers(sid, b) for b in blocks]

    got = _run(_calls(answers))
    assert got[:5] == [[b"abc"]] * 5
    assert got[5][0] == got[6][0] == grpc.StatusCode.PERMISSION_DENIED


def _whole_reference(data: bytes, max_bytes: int) -> list[bytes] | None:
    """whole_messages as grpc_messages' split: every byte taken, nothing compressed."""
    buf = bytearray(data)
    out, flags, _ = grpc_messages(buf, max_bytes)
    return out if not buf and not any(flags) else None


def test_whole_messages_in_c_matches_grpc_messages_on_random_and_hostile_answers():
    rng = random.Random(7)
    cases = [b"", _msg(b""), _msg(b"abc"), _msg(b"abc") + _msg(b"de"), _msg(b"abc")[:-1],
             _msg(b"abc", 1), _msg(b"a") + _msg(b"b", 1), b"\0\xff\xff\xff\xff",
             b"\0\x7f\xff\xff\xff" + b"x" * 9, _msg(b"x" * 100), b"\0\0\0\0"]
    for _ in range(3000):
        parts = [_msg(rng.randbytes(rng.randrange(12)), rng.choice((0, 0, 0, 1)))
                 for _ in range(rng.randrange(4))]
        data = b"".join(parts)
        if rng.random() < 0.3 and data:
            data = data[:rng.randrange(len(data))]
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randrange(20))
        cases.append(data)
    for data in cases:
        for max_bytes in (0, 3, 10, 1 << 20):
            assert whole_messages(data, max_bytes) == _whole_reference(data, max_bytes), data
            assert whole_messages(memoryview(data), max_bytes) == _whole_reference(data, max_bytes)
