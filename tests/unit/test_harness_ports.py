"""The test harness's ports: a restarted test server must get its port back, so no port it
hands out may be one the kernel also gives outgoing connections (test_restarts_with_prometheus
failed once: promring up's HTTP port had become the local port of a connection meanwhile)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import LISTEN_PORTS, ephemeral_low, free_port  # noqa: E402


def test_ports_handed_out_are_below_the_ephemeral_range_and_free() -> None:
    low = ephemeral_low()
    assert low > LISTEN_PORTS.start  # this machine leaves room (Linux's default is 32768)
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)  # never the same port twice in a row of servers
    for port in ports:
        assert LISTEN_PORTS.start <= port < min(low, LISTEN_PORTS.stop)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free


def test_ephemeral_low_of_an_unreadable_range_is_linuxs_default(tmp_path) -> None:
    (tmp_path / "range").write_text("40000\t60999\n")
    assert ephemeral_low(str(tmp_path / "range")) == 40000
    assert ephemeral_low(str(tmp_path / "missing")) == 32768
