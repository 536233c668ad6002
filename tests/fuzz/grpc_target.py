"""A real ``promring store`` (over a one-block bucket) as the target of hostile HTTP/2 gRPC
connections (h2conns.py), and the checks made after each one: the process lives, its log has
no traceback, the server's answer is well-formed HTTP/2 with no UNKNOWN status (a handler that
failed), the connection ended or went quiet in bounded time, and a fresh grpcio client still
gets the right Series answer."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import hpack
import numpy as np

from harness import store_process
from receiver.tsdb.block import write_block_from_samples
from storeapi import rpc_pb2, types_pb2
from storeapi.h2frames import (DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PREFACE,
                               RST_STREAM, split_frames)

H2 = 2 * 3600 * 1000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H2
SERIES = 5
READ_BOUND_S = 8.0  # a connection's answer must be complete (or the server quiet) by then
QUIET_S = 0.3  # no byte for this long after the last write: the server is done answering


def one_block_bucket(tmp: Path) -> Path:
    """A filesystem bucket with one 2 h block of up{instance="h0".."h4"}; its objstore config."""
    ts = T0 + np.arange(480, dtype=np.int64) * 15_000
    series = [((("__name__", "up"), ("instance", f"h{i}")), ts, np.full(480, float(i)))
              for i in range(SERIES)]
    write_block_from_samples(tmp / "bucket", series, T0, T0 + H2)
    conf = tmp / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp / 'bucket'}\n")
    return conf


@dataclass
class Answer:
    """What the server wrote back on one hostile connection."""

    data: bytes
    closed: bool  # the server closed the connection
    statuses: list[str] = field(default_factory=list)  # grpc-status values it sent
    goaway: int = 0  # 1 + the error code of the server's GOAWAY
    answered: set[int] = field(default_factory=set)  # streams it sent HEADERS or RST_STREAM on


def parse_answer(data: bytes, closed: bool) -> Answer:
    """The server's frames; AssertionError if they are not well-formed HTTP/2."""
    ans = Answer(data, closed)
    frames, used = split_frames(bytearray(data), 1 << 24)
    assert used == len(data) or not closed and used <= len(data), "a truncated frame"
    dec = hpack.Decoder()
    for typ, _flags, sid, payload in frames:
        if typ in (HEADERS, RST_STREAM):
            ans.answered.add(sid)
        if typ == HEADERS:
            for k, v in dec.decode(payload, raw=False):
                if k == "grpc-status":
                    ans.statuses.append(v)
        elif typ == GOAWAY:
            ans.goaway = int.from_bytes(payload[4:8], "big") + 1
    return ans


def completed_requests(chunks: list[bytes]) -> set[int]:
    """Streams on which the client finished a request (END_STREAM after a whole header block)
    and did not reset them: each must get an answer (or the connection a GOAWAY)."""
    data = b"".join(chunks)
    if not data.startswith(PREFACE):
        return set()
    frames, _ = split_frames(bytearray(data[len(PREFACE):]), 1 << 24)
    done: set[int] = set()
    opened: set[int] = set()  # a DATA on a stream never opened is not a request
    reset: set[int] = set()
    in_block = False
    for typ, flags, sid, _payload in frames:
        if typ == HEADERS:
            in_block = not flags & END_HEADERS
            opened.add(sid)
        if in_block and typ not in (HEADERS, 9):  # anything but CONTINUATION breaks a block
            return set()
        if typ == 9 and flags & END_HEADERS:
            in_block = False
        if typ in (HEADERS, DATA) and flags & END_STREAM and sid in opened:
            done.add(sid)
        elif typ == RST_STREAM:
            reset.add(sid)
    return set() if in_block else done - reset


class GrpcServerTarget:
    """A store process and the fuzzer's counts."""

    def __init__(self, workdir: Path) -> None:
        self.proc = store_process(workdir, "store", one_block_bucket(workdir)).start(60)
        self.host, self.port = "127.0.0.1", self.proc.ports["grpc"]
        self.log_pos = 0
        self.stats = {"connections": 0, "closed_by_server": 0, "quiet_open": 0}
        self.statuses: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while self.series_count() != SERIES:  # blocks are loaded after the process is ready
            assert time.monotonic() < deadline, "store never served its block"
            time.sleep(0.3)
        self.new_log()

    def send(self, chunks: list[bytes]) -> Answer:
        """Write ``chunks`` on a fresh connection, then read until the server closes, or has
        answered every completed request and goes quiet; AssertionError if a completed request
        is not answered within READ_BOUND_S, or the server still writes then."""
        expected = completed_requests(chunks)
        self.stats["connections"] += 1
        out = bytearray()
        closed = False
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            # every other connection pauses between its chunks, so that calls get answered
            # before a later chunk ends the connection; the others arrive as one burst
            pause = 0.02 if self.stats["connections"] % 2 else 0.0
            try:
                for c in chunks:
                    s.sendall(c)
                    time.sleep(pause)
            except OSError:  # the server hung up mid-way: fine, read what it said
                pass
            deadline = time.monotonic() + READ_BOUND_S
            s.settimeout(QUIET_S)
            while time.monotonic() < deadline:
                try:
                    got = s.recv(1 << 16)
                except socket.timeout:
                    if expected <= parse_answer(bytes(out), False).answered:
                        break
                    continue
                except OSError:
                    closed = True
                    break
                if not got:
                    closed = True
                    break
                out += got
            else:
                raise AssertionError(f"server still writing, or requests on streams {expected} "
                                     f"unanswered, after {READ_BOUND_S}s: {bytes(out)[-300:]!r}")
        ans = parse_answer(bytes(out), closed)
        self.stats["closed_by_server" if closed else "quiet_open"] += 1
        if ans.goaway:
            key = f"goaway_{ans.goaway - 1}"
            self.stats[key] = self.stats.get(key, 0) + 1
        for s in ans.statuses:
            self.statuses[s] = self.statuses.get(s, 0) + 1
        return ans

    def series_count(self) -> int:
        """Series of a well-behaved grpcio client's call on a fresh channel."""
        req = rpc_pb2.SeriesRequest(min_time=T0, max_time=T0 + H2, matchers=[
            types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__", value="up")])
        with grpc.insecure_channel(f"{self.host}:{self.port}") as ch:
            call = ch.unary_stream("/thanos.Store/Series",
                                   request_serializer=rpc_pb2.SeriesRequest.SerializeToString,
                                   response_deserializer=rpc_pb2.SeriesResponse.FromString)
            return sum(r.HasField("series") for r in call(req, timeout=20))

    def new_log(self) -> str:
        text = self.proc.log_path.read_text(errors="replace")
        new, self.log_pos = text[self.log_pos:], len(text)
        return new

    def rss_kib(self) -> int:
        for line in open(f"/proc/{self.proc.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def check(self, ans: Answer) -> None:
        """The invariants after one hostile connection."""
        assert self.proc.proc.poll() is None, "the store died"
        assert "2" not in ans.statuses, \
            f"grpc-status UNKNOWN (a handler failed): {ans.data[-400:]!r}"
        log = self.new_log()
        assert "Traceback" not in log and "exception was never retrieved" not in log, log[-3000:]
        assert self.series_count() == SERIES


