"""A real S3 endpoint for tests: ``moto_server`` run as a subprocess on a loopback port.

Usage::

    server = MotoServer()          # picks a free 127.0.0.1 port
    server.start()                 # raises MotoNotInstalled if there is no moto_server
    server.create_bucket("blocks")
    ... S3 config: endpoint=server.endpoint, insecure=True, any access/secret key ...
    server.stop()

``restart()`` keeps the port (clients pointing at it reconnect) but, as moto keeps state in
memory, the buckets are gone afterwards. Note: this module is imported as ``moto`` from tests/,
so test code must not also need the real ``moto`` package in-process.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


class MotoNotInstalled(RuntimeError):
    """No ``moto_server`` executable (install ``moto[server]``)."""


def find_moto_server() -> str | None:
    """The moto 5 server entry point: next to this interpreter first (the venv), then on PATH."""
    local = Path(sys.executable).parent / "moto_server"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("moto_server")


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class MotoServer:
    def __init__(self, port: int | None = None, host: str = HOST) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``host:port``, the form Thanos's S3 ``endpoint`` field takes."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "MotoServer":
        exe = find_moto_server()
        if exe is None:
            raise MotoNotInstalled("moto_server not found; install 'moto[server]'")
        self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
        env = dict(os.environ)
        self._proc = subprocess.Popen(
            [exe, "-H", self.host, "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        # Never outlive the test process, even if a test forgets stop() or the run is aborted.
        weakref.finalize(self, _terminate, self._proc)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}:\n{self.log_text()}")
            if self._answers():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not answer within {START_TIMEOUT}s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def _request(self, method: str, path: str) -> int:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method != "GET" else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise RuntimeError(f"moto {method} {path}: HTTP {e.code}: {detail}") from e

    def create_bucket(self, name: str) -> None:
        """Create a bucket (moto needs no credentials, so a bare PUT will do)."""
        self._request("PUT", "/" + name)

    def reset(self) -> None:
        """Drop every bucket and object."""
        self._request("POST", "/moto-api/reset")

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            try:
                os.unlink(self._log.name)
            except OSError:
                pass
            self._log = None

    def restart(self) -> None:
        """Stop and start again on the same port; all state is lost."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        if self._log is None:
            return ""
        try:
            return Path(self._log.name).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
