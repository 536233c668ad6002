"""The system under test: optionally a ``promring up`` we start, and how to read its memory."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

_RSS_RE = re.compile(rb"^process_resident_memory_bytes(?:\{[^}]*\})?\s+(\S+)", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"target exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s")


class UpProcess:
    """``promring up`` in a temporary data dir on free loopback ports; removed on stop()."""

    def __init__(self, *extra: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="promring-loadtest-"))
        self.rw_port, self.http_port = free_port(), free_port()
        exe = shutil.which("promring", path=str(Path(sys.executable).parent))
        cmd = [exe] if exe else [sys.executable, "-m", "promring"]
        self.args = cmd + ["up", "--data-dir", str(self.dir / "data"),
                           "--remote-write.address", f"127.0.0.1:{self.rw_port}",
                           "--http-address", f"127.0.0.1:{self.http_port}", "--log.level", "warn", *extra]
        self.log_path = self.dir / "promring.log"
        self.proc: subprocess.Popen | None = None

    @property
    def remote_write_url(self) -> str:
        return f"http://127.0.0.1:{self.rw_port}/api/v1/receive"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "UpProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        wait_ready(f"http://127.0.0.1:{self.rw_port}/-/ready", self.proc)
        wait_ready(f"http://127.0.0.1:{self.http_port}/-/ready", self.proc)
        return self

    def stop(self) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                code = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
        return code


def rss_from_proc(pid: int) -> int | None:
    """Resident bytes of one process from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_from_metrics(url: str) -> int | None:
    """``process_resident_memory_bytes`` from a /metrics page (None if it isn't exported)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            m = _RSS_RE.search(r.read())
    except (urllib.error.URLError, OSError):
        return None
    return int(float(m.group(1))) if m else None
