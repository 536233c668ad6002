"""Slow or stalled clients cannot hold the remote-write server: a request whose headers or body
stop arriving is cut off after a bounded time, and meanwhile normal writes succeed. The
receiver runs in-process here with timeouts of one second (defaults are in ReceiveConfig)."""
from __future__ import annotations

import asyncio
import select
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rw import push  # noqa: E402

from receiver.config import ReceiveConfig  # noqa: E402
from receiver.server import Receiver  # noqa: E402

N_STALLED = 150


@pytest.fixture
def receiver(tmp_path):
    cfg = ReceiveConfig(remote_write_address="127.0.0.1:0", grpc_address="", http_address="",
                        tsdb_path=tmp_path / "tsdb", http_header_timeout_s=1.0,
                        http_read_timeout_s=1.0)
    loop = asyncio.new_event_loop()
    r = Receiver(cfg)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(r.start())
        started.set()
        loop.run_forever()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    assert started.wait(30)
    yield r
    asyncio.run_coroutine_threadsafe(r.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    th.join(10)
    loop.close()


def _stalled(port: int, what: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(what)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server has closed ``s`` (EOF after whatever it answered)."""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_stalled_requests_are_cut_off_and_writes_go_on(receiver):
    port = receiver.ports["remote_write"]
    url = f"http://127.0.0.1:{port}/api/v1/receive"
    half_headers = b"POST /api/v1/receive HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-prot"
    half_body = (b"POST /api/v1/receive HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\n"
                 b"Content-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 100)
    socks = [_stalled(port, half_headers if i % 2 else half_body) for i in range(N_STALLED)]
    socks.append(socket.create_connection(("127.0.0.1", port)))  # connects, sends nothing
    try:
        r = push(url, [(((("__name__", "alive"),)), [1_700_000_000_000], [1.0])], timeout=10)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        open_socks = list(socks)
        while open_socks and time.monotonic() < deadline:
            select.select(open_socks, [], [], 0.5)
            open_socks = [s for s in open_socks if not _closed_by_server(s)]
        assert not open_socks, f"{len(open_socks)} of {len(socks)} stalled connections still open"
        r = push(url, [(((("__name__", "alive"),)), [1_700_000_001_000], [2.0])], timeout=10)
        assert r.status_code == 200, r.text
    finally:
        for s in socks:
            s.close()


def test_a_stalled_body_gets_408(receiver):
    port = receiver.ports["remote_write"]
    s = _stalled(port, b"POST /api/v1/receive HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nabc")
    try:
        s.settimeout(20)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        assert got.startswith(b"HTTP/1.1 408"), got
    finally:
        s.close()
