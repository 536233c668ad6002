"""Starting and talking to real processes from tests: promring and Debian's Prometheus."""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]


# Ports handed to test servers come from below the kernel's ephemeral range (as real ones do:
# 9090, 10901, 19291): a port from inside it can be taken, while its server restarts, by an
# outgoing connection's local port (Prometheus's remote write or scrape, a querier's gRPC), and
# the restart then fails with "address already in use" (seen in test_restarts_with_prometheus).
LISTEN_PORTS = range(20_000, 32_768)


def ephemeral_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    """The lowest port the kernel gives outgoing connections."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


class _PortCycle:
    """Ports of LISTEN_PORTS in turn from a random start: distinct for the next 12,768 calls
    (two picks at random would collide once in ~4,000 three-port servers)."""

    def __init__(self) -> None:
        self.next = random.randrange(LISTEN_PORTS.start, LISTEN_PORTS.stop)

    def take(self, top: int) -> int:
        if not LISTEN_PORTS.start <= self.next < top:
            self.next = LISTEN_PORTS.start
        port = self.next
        self.next += 1
        return port


_PORTS = _PortCycle()


def free_port() -> int:
    """A port free now on 127.0.0.1, below the ephemeral range when there is room for one."""
    top = min(LISTEN_PORTS.stop, ephemeral_low())
    for _ in range(200 if top > LISTEN_PORTS.start else 0):
        port = _PORTS.take(top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def promring_cmd() -> list[str]:
    exe = shutil.which("promring", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "promring"]


def wait_ready(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            r = requests.get(url, timeout=1)
            if r.status_code == 200:
                return
            last = r.status_code
        except requests.RequestException as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


class PromringProcess:
    """``promring up`` as a child process with its own log file."""

    def __init__(self, args: list[str], data_dir: Path, rw_port: int, http_port: int) -> None:
        self.args, self.data_dir = args, data_dir
        self.rw_port, self.http_port = rw_port, http_port
        self.log_path = data_dir.parent / f"promring-{rw_port}.log"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def up(cls, data_dir: Path, *extra: str) -> "PromringProcess":
        rw, http = free_port(), free_port()
        args = promring_cmd() + ["up", "--data-dir", str(data_dir),
                                 "--remote-write.address", f"127.0.0.1:{rw}",
                                 "--http-address", f"127.0.0.1:{http}", *extra]
        p = cls(args, data_dir, rw, http)
        try:
            p.start()
        except BaseException:  # not ready in time: no process left behind
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
            raise
        return p

    @property
    def write_url(self) -> str:
        return f"http://127.0.0.1:{self.rw_port}/api/v1/receive"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir.parent)
        log.close()
        wait_ready(f"http://127.0.0.1:{self.rw_port}/-/ready", proc=self.proc)
        wait_ready(f"http://127.0.0.1:{self.http_port}/-/ready", proc=self.proc)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# Prometheus scraping itself every second and remote-writing to "{url}" (str.format it).
def self_scrape_remote_write(url: str, *, queue: dict | None = None,
                             metadata_send_interval: str | None = None,
                             jobs: dict[str, str] | None = None,
                             send_exemplars: bool = False) -> str:
    """Prometheus config: scrape itself (and ``jobs``: name -> target) every second and
    remote-write to ``url``; ``queue`` replaces the fast-flushing default queue_config;
    ``send_exemplars`` also sends scraped exemplars (Prometheus then needs
    ``--enable-feature=exemplar-storage``)."""
    scrape = [{"job_name": "prometheus", "static_configs": [{"targets": ["$SELF"]}]}]
    scrape += [{"job_name": name, "static_configs": [{"targets": [target]}]}
               for name, target in (jobs or {}).items()]
    rw: dict = {"url": url, "queue_config": queue or {"batch_send_deadline": "1s",
                                                      "max_samples_per_send": 2000}}
    if send_exemplars:
        rw["send_exemplars"] = True
    if metadata_send_interval:
        rw["metadata_config"] = {"send_interval": metadata_send_interval}
    return yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                           "scrape_configs": scrape, "remote_write": [rw]}, sort_keys=False)


class PrometheusProcess:
    """Debian's Prometheus 2.42 with a config we write; stopped by the test that starts it."""

    def __init__(self, workdir: Path, config_yaml: str, *extra: str) -> None:
        self.port = free_port()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(config_yaml.replace("$SELF", f"127.0.0.1:{self.port}"))
        self.args = ["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", *extra]
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> "PrometheusProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_ready(f"http://127.0.0.1:{self.port}/-/ready", proc=self.proc, timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class ServerProcess:
    """Any ``promring`` subcommand as a child process, ready when its ready URLs answer 200.

    ``ports`` names the loopback ports it was given (remote_write, grpc, http) so that a test can
    restart it on the same addresses after ``kill9``.
    """

    def __init__(self, args: list[str], workdir: Path, name: str, ports: dict[str, int],
                 ready_urls: list[str]) -> None:
        self.args, self.workdir, self.name = args, workdir, name
        self.ports, self.ready_urls = ports, ready_urls
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        for url in self.ready_urls:
            wait_ready(url, timeout=timeout, proc=self.proc)
        return self

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    kill9 = PromringProcess.kill9
    stop = PromringProcess.stop
    log_text = PromringProcess.log_text


def receive_process(workdir: Path, name: str, *extra: str, router_only: bool = False) -> ServerProcess:
    """``promring receive`` on fresh loopback ports (ingestor unless a hashrings file is passed)."""
    ports = {"remote_write": free_port(), "grpc": free_port(), "http": free_port(),
             "capnproto": free_port()}
    args = promring_cmd() + ["receive", "--tsdb.path", str(workdir / name),
                             "--remote-write.address", f"127.0.0.1:{ports['remote_write']}",
                             "--grpc-address", f"127.0.0.1:{ports['grpc']}",
                             "--receive.capnproto-address", f"127.0.0.1:{ports['capnproto']}",
                             "--http-address", f"127.0.0.1:{ports['http']}", *extra]
    ready = [f"http://127.0.0.1:{ports['remote_write']}/-/ready"]
    return ServerProcess(args, workdir, name, ports, ready)


def query_process(workdir: Path, name: str, endpoints: list[str], *extra: str) -> ServerProcess:
    ports = {"http": free_port(), "grpc": free_port()}
    args = promring_cmd() + ["query", "--http-address", f"127.0.0.1:{ports['http']}",
                             "--grpc-address", f"127.0.0.1:{ports['grpc']}",
                             *[f"--endpoint={e}" for e in endpoints], *extra]
    return ServerProcess(args, workdir, name, ports, [f"http://127.0.0.1:{ports['http']}/-/ready"])


def start_process(args: list[str], ready_url: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT)
    wait_ready(ready_url, proc=proc, timeout=60)
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)


def store_and_query(tmp_path: Path, objstore_yaml: str, *query_args: str,
                    store_args: tuple[str, ...] = ()) -> tuple[list[subprocess.Popen], str]:
    """``promring store`` over a bucket and ``promring query`` over it; returns (processes, API
    base URL). The caller stops the processes with stop_process."""
    cfg = tmp_path / "objstore.yml"
    cfg.write_text(objstore_yaml)
    sg, sh, qh = free_port(), free_port(), free_port()
    store = start_process(promring_cmd() + ["store", "--data-dir", str(tmp_path / "store"),
                                     "--objstore.config-file", str(cfg),
                                     "--grpc-address", f"127.0.0.1:{sg}", "--http-address", f"127.0.0.1:{sh}",
                                     *store_args],
                   f"http://127.0.0.1:{sh}/-/ready", tmp_path / "store.log")
    query = start_process(promring_cmd() + ["query", "--endpoint", f"127.0.0.1:{sg}",
                                     "--grpc-address", "127.0.0.1:0",
                                     "--http-address", f"127.0.0.1:{qh}", *query_args],
                   f"http://127.0.0.1:{qh}/-/ready", tmp_path / "query.log")
    return [query, store], f"http://127.0.0.1:{qh}/api/v1"


def wait_for_blocks(tenant_dir: Path, covering_ms: int, timeout: float = 60.0) -> list[Path]:
    """Block dirs of a tenant once some block reaches past ``covering_ms`` (blocks are cut on
    the 1.5-range schedule by the ingestor's lifecycle loop, not on shutdown)."""
    import json
    deadline = time.monotonic() + timeout
    while True:
        metas = list(tenant_dir.glob("*/meta.json")) if tenant_dir.is_dir() else []
        if metas and max(json.loads(m.read_text())["maxTime"] for m in metas) > covering_ms:
            return sorted(m.parent for m in metas)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no block past {covering_ms} in {tenant_dir} after {timeout}s")
        time.sleep(0.2)


def answers_of_prometheus_and_querier(workdir: Path, answers, cfg=None, prometheus: str | None = None
                                      ) -> tuple:
    """``answers(base_url)`` (a coroutine function) run against Debian's Prometheus 2.42 (or the
    ``prometheus`` binary given, e.g. the Prometheus 3 peer) and against an in-process promring
    querier with ``cfg``: (theirs, ours)."""
    import asyncio
    from dataclasses import replace

    from querier.config import QueryConfig
    from querier.server import Querier
    prom = PrometheusProcess(workdir / "prom", "global:\n  scrape_interval: 1m\n")
    if prometheus:
        prom.args[0] = prometheus
    prom.start()
    try:
        theirs = asyncio.run(answers(f"http://127.0.0.1:{prom.port}"))
    finally:
        prom.stop()

    async def ours():
        q = Querier(replace(cfg or QueryConfig(), http_address="127.0.0.1:0"))
        await q.start()
        try:
            return await answers(f"http://127.0.0.1:{q.port}")
        finally:
            await q.stop()
    return theirs, asyncio.run(ours())


def rule_process(workdir: Path, name: str, *extra: str) -> ServerProcess:
    """``promring rule`` on fresh loopback HTTP and gRPC ports (its data dir under workdir)."""
    ports = {"http": free_port(), "grpc": free_port()}
    args = promring_cmd() + ["rule", "--data-dir", str(workdir / name),
                             "--http-address", f"127.0.0.1:{ports['http']}",
                             "--grpc-address", f"127.0.0.1:{ports['grpc']}", *extra]
    return ServerProcess(args, workdir, name, ports, [f"http://127.0.0.1:{ports['http']}/-/ready"])


ALERTMANAGER_CONFIG = """
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: "null"
"""


def alertmanager_process(workdir: Path, name: str = "alertmanager") -> ServerProcess:
    """Debian's ``prometheus-alertmanager`` on a free port, clustering off, a receiver that
    drops notifications (tests read what it received from its API)."""
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if exe is None:
        raise AssertionError("prometheus-alertmanager is not installed (scripts/test.sh "
                             "installs Debian's package)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.yml").write_text(ALERTMANAGER_CONFIG)
    port = free_port()
    args = [exe, f"--config.file={workdir / f'{name}.yml'}",
            f"--storage.path={workdir / name}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address="]
    return ServerProcess(args, workdir, name, {"http": port},
                         [f"http://127.0.0.1:{port}/-/ready"])


def sidecar_process(workdir: Path, name: str, prometheus_url: str, tsdb_path: Path,
                    *extra: str) -> ServerProcess:
    """``promring sidecar`` next to the Prometheus at ``prometheus_url`` on fresh ports."""
    ports = {"grpc": free_port(), "http": free_port()}
    args = promring_cmd() + ["sidecar", "--prometheus.url", prometheus_url,
                             "--tsdb.path", str(tsdb_path),
                             "--grpc-address", f"127.0.0.1:{ports['grpc']}",
                             "--http-address", f"127.0.0.1:{ports['http']}", *extra]
    return ServerProcess(args, workdir, name, ports, [f"http://127.0.0.1:{ports['http']}/-/ready"])


def store_process(workdir: Path, name: str, objstore_config_file: Path, *extra: str
                  ) -> ServerProcess:
    """``promring store`` over a bucket on fresh ports."""
    ports = {"grpc": free_port(), "http": free_port()}
    args = promring_cmd() + ["store", "--data-dir", str(workdir / name),
                             "--objstore.config-file", str(objstore_config_file),
                             "--grpc-address", f"127.0.0.1:{ports['grpc']}",
                             "--http-address", f"127.0.0.1:{ports['http']}", *extra]
    return ServerProcess(args, workdir, name, ports, [f"http://127.0.0.1:{ports['http']}/-/ready"])
