"""Debian's memcached as a child process on a free loopback port (tests stop what they start)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from harness import free_port


class Memcached:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Memcached":
        exe = shutil.which("memcached") or "/usr/bin/memcached"
        args = [exe, "-p", str(self.port), "-l", "127.0.0.1", "-U", "0", "-m", "64"]
        if os.geteuid() == 0:  # memcached refuses to run as root without a user to become
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"memcached did not start on {self.port}")
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    stop = kill
