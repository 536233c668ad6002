"""Debian's memcached as a child process on a free loopback port, for the store gateway's and
the query frontend's cache tests (tests stop what they start)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from harness import free_port


class MemcachedProcess:
    """Started by the constructor, ready to answer when it returns."""

    def __init__(self) -> None:
        exe = shutil.which("memcached")
        if exe is None:
            raise RuntimeError("memcached not installed (scripts/test.sh installs it)")
        self.port = free_port()
        args = [exe, "-p", str(self.port), "-l", "127.0.0.1", "-U", "0", "-m", "64"]
        if os.geteuid() == 0:  # memcached refuses to run as root without a user to become
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("memcached did not start") from None
                time.sleep(0.05)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, line: bytes) -> bytes:
        """One raw text-protocol exchange (tests inject values with it)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(line)
            return s.recv(1 << 16)

    def set_raw(self, key: str, value: bytes) -> None:
        reply = self.command(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        assert reply == b"STORED\r\n", reply

    def keys(self) -> list[str]:
        """Keys stored (memcached's lru_crawler metadump; fine for the small test caches)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"lru_crawler metadump all\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        from urllib.parse import unquote
        return [unquote(line.split()[0].split(b"=", 1)[1].decode())
                for line in buf.splitlines() if line.startswith(b"key=")]

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
