"""Operator mistakes on the command line or in config files: each is one line on stderr naming
the flag or file (and what would be right), a non-zero exit, no traceback, and no slow work
first (the data dir is not created, no WAL replayed, nothing listens).

Value checks of single receive/up flags run in-process in test_flag_validation.py; this matrix
runs the real ``promring`` process for every subcommand and for files and ports."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import promring_cmd

LOOPBACK_ANY = "127.0.0.1:0"
ADDRS = ["--http-address", LOOPBACK_ANY, "--grpc-address", LOOPBACK_ANY]
BASE = {
    "receive": ["receive", "--tsdb.path", "{tmp}/data", *ADDRS, "--remote-write.address", LOOPBACK_ANY],
    "query": ["query", *ADDRS],
    "store": ["store", "--data-dir", "{tmp}/data", *ADDRS, "--objstore.config-file", "{tmp}/fs.yaml"],
    "store-no-bucket": ["store", "--data-dir", "{tmp}/data", *ADDRS],
    "compact": ["compact", "--data-dir", "{tmp}/data", "--http-address", LOOPBACK_ANY,
                "--objstore.config-file", "{tmp}/fs.yaml"],
    "up": ["up", "--data-dir", "{tmp}/data", *ADDRS, "--remote-write.address", LOOPBACK_ANY],
    "bucket-ls": ["tools", "bucket", "ls", "--objstore.config-file", "{tmp}/fs.yaml"],
    "bucket-web": ["tools", "bucket", "web", "--http-address", LOOPBACK_ANY,
                   "--objstore.config-file", "{tmp}/fs.yaml"],
    "none": [],
}

# (id, base, extra args, words the one error line must contain)
MISTAKES = [
    ("receive-retention-15days", "receive", ["--tsdb.retention", "15days"],
     ["--tsdb.retention", "15days", "15d"]),
    ("receive-tsdb-path-under-file", "receive", ["--tsdb.path", "{tmp}/afile/data"],
     ["--tsdb.path", "is a file"]),
    ("receive-objstore-missing", "receive", ["--objstore.config-file", "{tmp}/nope.yaml"],
     ["--objstore.config-file", "nope.yaml", "no such file"]),
    ("receive-objstore-bad-yaml", "receive", ["--objstore.config-file", "{tmp}/bad.yaml"],
     ["--objstore.config-file", "bad.yaml", "line 4"]),
    ("receive-objstore-gcs", "receive", ["--objstore.config-file", "{tmp}/gcs.yaml"],
     ["GCS", "not supported", "FILESYSTEM, S3"]),
    ("receive-hashrings-missing", "receive", ["--receive.hashrings-file", "{tmp}/nope.json"],
     ["--receive.hashrings-file", "no such file"]),
    ("receive-hashrings-not-json", "receive", ["--receive.hashrings-file", "{tmp}/bad.yaml"],
     ["--receive.hashrings-file", "not JSON"]),
    ("receive-limits-bad-yaml", "receive", ["--receive.limits-config-file", "{tmp}/bad.yaml"],
     ["--receive.limits-config-file", "line 4"]),
    ("receive-http-config-unknown-field", "receive", ["--http.config", "{tmp}/fs.yaml"],
     ["--http.config", "unknown field"]),
    ("receive-tls-cert-not-pem", "receive",
     ["--grpc-server-tls-cert", "{tmp}/fs.yaml", "--grpc-server-tls-key", "{tmp}/fs.yaml"],
     ["--grpc-server-tls-cert", "fs.yaml", "PEM"]),
    ("receive-tls-cert-without-key", "receive", ["--grpc-server-tls-cert", "{tmp}/fs.yaml"],
     ["--grpc-server-tls", "key"]),
    ("receive-port-in-use", "receive", ["--remote-write.address", "{busy}"],
     ["--remote-write.address", "in use"]),
    ("receive-bad-hashring-algorithm", "receive", ["--receive.hashrings-algorithm", "rendezvous"],
     ["--receive.hashrings-algorithm", "hashmod"]),
    ("receive-bad-wal-fsync", "receive", ["--tsdb.wal-fsync", "always"], ["--tsdb.wal-fsync"]),
    ("query-timeout-2minutes", "query", ["--query.timeout", "2minutes"],
     ["--query.timeout", "15d"]),
    ("query-port-abc", "query", ["--http-address", ":abc"], ["--http-address", "port"]),
    ("query-port-in-use", "query", ["--http-address", "{busy}"], ["--http-address", "in use"]),
    ("query-same-port-twice", "query", ["--http-address", "127.0.0.1:{free}",
                                        "--grpc-address", "127.0.0.1:{free}"],
     ["--http-address", "--grpc-address"]),
    ("query-endpoint-config-missing", "query", ["--endpoint.sd-config-file", "{tmp}/nope.yaml"],
     ["--endpoint.sd-config-file", "no such file"]),
    ("query-endpoint-config-bad-yaml", "query", ["--endpoint.sd-config-file", "{tmp}/bad.yaml"],
     ["--endpoint.sd-config-file", "line 4"]),
    ("query-bad-dedup-func", "query", ["--deduplication.func", "max"], ["--deduplication.func"]),
    ("query-max-concurrent-not-int", "query", ["--query.max-concurrent", "many"],
     ["--query.max-concurrent", "int"]),
    ("query-unknown-flag", "query", ["--query.timeout-typo", "1m"],
     ["promring query", "--query.timeout-typo", "did you mean --query.timeout?"]),
    ("query-client-ca-missing", "query", ["--grpc-client-tls-secure", "--grpc-client-tls-ca",
                                          "{tmp}/nope.pem"], ["--grpc-client-tls", "nope.pem"]),
    ("query-inline-endpoint-config-bad", "query", ["--endpoint.sd-config", "endpoints: [{{addr: x}}]"],
     ["--endpoint.sd-config"]),
    ("receive-inline-hashrings-bad", "receive", ["--receive.hashrings", "[{{\"endpoints\": 7}}]"],
     ["hashrings", "endpoints"]),
    ("query-http-config-dir", "query", ["--http.config", "{tmp}"], ["--http.config", "directory"]),
    ("store-no-bucket", "store-no-bucket", [], ["--objstore.config-file", "required"]),
    ("store-inline-objstore-bad-yaml", "store-no-bucket", ["--objstore.config", "type: [S3"],
     ["--objstore.config", "line 1"]),
    ("store-data-dir-is-file", "store", ["--data-dir", "{tmp}/afile"], ["--data-dir", "is a file"]),
    ("store-sync-3minutes", "store", ["--sync-block-duration", "3minutes"],
     ["--sync-block-duration", "15d"]),
    ("store-objstore-unknown-field", "store-no-bucket",
     ["--objstore.config", "type: FILESYSTEM\nconfig:\n  dir: /tmp\n"], ["--objstore.config", "dir"]),
    ("compact-gcs", "compact", ["--objstore.config-file", "{tmp}/gcs.yaml"], ["GCS", "S3"]),
    ("compact-retention-30days", "compact", ["--retention.resolution-raw", "30days"],
     ["--retention.resolution-raw", "15d"]),
    ("compact-wait-interval-bad", "compact", ["--wait-interval", "5 minutes"],
     ["--wait-interval"]),
    ("up-data-dir-under-file", "up", ["--data-dir", "{tmp}/afile/up"], ["--data-dir", "is a file"]),
    ("up-bad-log-format", "up", ["--log.format", "yaml"], ["--log.format", "logfmt"]),
    ("up-same-port-loopback-and-wildcard", "up", ["--remote-write.address", "127.0.0.1:{free}",
                                                  "--http-address", "0.0.0.0:{free}"],
     ["--http-address", "--remote-write.address", "port {free}"]),
    ("up-port-in-use", "up", ["--http-address", "{busy}"], ["--http-address", "in use"]),
    ("tools-objstore-missing", "bucket-ls", ["--objstore.config-file", "{tmp}/nope.yaml"],
     ["--objstore.config-file", "no such file"]),
    ("tools-bad-output", "bucket-ls", ["--output", "xml"], ["--output", "table"]),
    ("tools-web-refresh-bad", "bucket-web", ["--refresh", "30minutes"], ["--refresh", "15d"]),
    ("unknown-subcommand", "none", ["recieve"], ["recieve", "receive"]),
]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "bad.yaml").write_text("type: FILESYSTEM\nconfig:\n  directory: [\n")
    (tmp_path / "gcs.yaml").write_text("type: GCS\nconfig:\n  bucket: metrics\n")
    (tmp_path / "fs.yaml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path}/bucket\n")
    (tmp_path / "afile").write_text("not a directory\n")
    return tmp_path


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def run_promring(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(promring_cmd() + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"promring {' '.join(args)} started instead of refusing: {e.stderr!r}")


def assert_one_error_line(r: subprocess.CompletedProcess, words: list[str]) -> str:
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("base,extra,words", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_line_and_a_non_zero_exit(files, busy_port, base, extra, words):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    fill = {"tmp": str(files), "busy": f"127.0.0.1:{busy_port}", "free": str(free)}
    args = [x.format(**fill) for x in BASE[base] + extra]
    r = run_promring(args)
    assert_one_error_line(r, [w.format(**fill) for w in words])
    assert not (files / "data").exists()  # refused before the data dir was touched


def test_the_matrix_covers_every_subcommand():
    commands = {BASE[m[1]][0] if BASE[m[1]] else "" for m in MISTAKES}
    assert {"receive", "query", "store", "compact", "up", "tools"} <= commands
    assert len({m[0] for m in MISTAKES}) == len(MISTAKES) >= 30


def test_an_error_after_start_up_began_is_one_line_too(files):
    """The data dir's bucket/ is a file: found only while ``up`` starts, still one line."""
    (files / "data").mkdir()
    (files / "data" / "bucket").write_text("in the way\n")
    r = run_promring(BASE["up"][:1] + [x.format(tmp=files) for x in BASE["up"][1:]])
    line = assert_one_error_line(r, ["bucket", "File exists"])
    assert "--log.level=debug" not in line  # a known cause: no hint at a bug


def test_an_unexpected_error_is_one_line_with_the_traceback_only_at_debug():
    code = ("import argparse, sys\n"
            "from promring.startup import run_reporting_errors\n"
            "def boom(a): raise RuntimeError('surprise\\nacross lines')\n"
            "run_reporting_errors(argparse.Namespace(command='query', log_level=sys.argv[1]), boom)\n")
    quiet = subprocess.run([sys.executable, "-c", code, "info"], capture_output=True, text=True,
                           timeout=30)
    line = assert_one_error_line(quiet, ["RuntimeError", "surprise across lines",
                                         "--log.level=debug"])
    assert line.startswith("promring query: error:")
    loud = subprocess.run([sys.executable, "-c", code, "debug"], capture_output=True, text=True,
                          timeout=30)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "in boom" in loud.stderr


def test_a_port_taken_while_starting_is_one_line_and_nothing_is_left_running(files):
    """Two names for one address pass the start-up check; the second bind fails inside the
    start (after the WAL replay): still one error line, no "Event loop is closed" from servers
    that had started (they are stopped)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_promring(["up", "--data-dir", f"{files}/data", "--grpc-address", LOOPBACK_ANY,
                      "--remote-write.address", f"127.0.0.1:{port}",
                      "--http-address", f"localhost:{port}"])
    assert r.returncode != 0 and "Traceback" not in r.stderr and "Event loop" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("ts=")]
    assert len(errors) == 1 and "address already in use" in errors[0], r.stderr
