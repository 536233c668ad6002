"""Every receive/up flag value is checked at start: a bad one is a one-line error and a non-zero
exit before the data dir is touched (no WAL replay, no listening socket), never a process that
starts and then answers 500 to every write."""
from __future__ import annotations

import subprocess

import pytest

from harness import free_port, promring_cmd
from promring.cli import main

BAD_RECEIVE = [
    (["--tsdb.min-block-duration", "0"], "--tsdb.min-block-duration"),
    (["--tsdb.min-block-duration=-2h"], "--tsdb.min-block-duration"),
    (["--tsdb.min-block-duration", "2x"], "--tsdb.min-block-duration"),
    (["--tsdb.max-block-duration", "1h"], "--tsdb.max-block-duration"),
    (["--tsdb.retention", "inf"], "--tsdb.retention"),
    (["--tsdb.retention=-1d"], "--tsdb.retention"),
    (["--tsdb.out-of-order.time-window=-1h"], "--tsdb.out-of-order.time-window"),
    (["--tsdb.out-of-order.time-window", "soon"], "--tsdb.out-of-order.time-window"),
    (["--receive.max-request-size", "0"], "--receive.max-request-size"),
    (["--receive.max-request-size", "lots"], "--receive.max-request-size"),
    (["--receive.replication-factor", "0"], "--receive.replication-factor"),
    (["--receive-forward-timeout", "0s"], "--receive-forward-timeout"),
    (["--receive.hashrings-file-refresh-interval", "0"], "--receive.hashrings-file-refresh-interval"),
    (["--remote-write.address", "localhost"], "--remote-write.address"),
    (["--remote-write.address", "127.0.0.1:99999"], "--remote-write.address"),
    (["--grpc-address", "127.0.0.1:http"], "--grpc-address"),
    (["--receive.capnproto-address", "127.0.0.1"], "--receive.capnproto-address"),
    (["--label", "no-equals-sign"], "--label"),
    (["--label", '0bad="x"'], "--label"),
    (["--receive.default-tenant-id", "../etc"], "--receive.default-tenant-id"),
    (["--receive.tenant-label-name", "bad-name"], "--receive.tenant-label-name"),
    (["--receive.tenant-header", ""], "--receive.tenant-header"),
    (["--receive.limits-config-file", "/nonexistent/limits.yaml"], "--receive.limits-config-file"),
    (["--objstore.config-file", "/nonexistent/bucket.yaml"], "--objstore.config-file"),
    (["--receive.hashrings-file", "/nonexistent/hashrings.json"], "--receive.hashrings-file"),
]

BAD_UP_ONLY = [
    (["--query.lookback-delta", "0"], "--query.lookback-delta"),
    (["--query.timeout", "0s"], "--query.timeout"),
    (["--query.max-concurrent", "0"], "--query.max-concurrent"),
    (["--query.max-samples", "0"], "--query.max-samples"),
]


def _addresses() -> list[str]:
    return ["--remote-write.address", f"127.0.0.1:{free_port()}",
            "--grpc-address", f"127.0.0.1:{free_port()}", "--http-address", f"127.0.0.1:{free_port()}",
            "--receive.capnproto-address", f"127.0.0.1:{free_port()}"]


def _refused(argv: list[str], flag: str, capsys) -> None:
    """``promring <argv>`` in-process exits 2 with one stderr line naming ``flag``."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and flag in err[0], err


@pytest.mark.parametrize("bad,flag", BAD_RECEIVE, ids=[" ".join(b) for b, _ in BAD_RECEIVE])
def test_receive_refuses_bad_flag_values_before_any_work(tmp_path, bad, flag, capsys):
    data = tmp_path / "tsdb"
    _refused(["receive", "--tsdb.path", str(data), *_addresses(), *bad], flag, capsys)
    assert not data.exists()


@pytest.mark.parametrize("bad,flag", BAD_UP_ONLY, ids=[" ".join(b) for b, _ in BAD_UP_ONLY])
def test_up_refuses_bad_flag_values_before_any_work(tmp_path, bad, flag, capsys):
    data = tmp_path / "data"
    _refused(["up", "--data-dir", str(data), *bad], flag, capsys)
    assert not data.exists()


@pytest.mark.parametrize("command", ["receive", "up"])
def test_the_process_exits_non_zero_with_one_line(tmp_path, command):
    data = tmp_path / "data"
    where = ["--tsdb.path", str(data), *_addresses()] if command == "receive" else [
        "--data-dir", str(data), "--remote-write.address", f"127.0.0.1:{free_port()}",
        "--http-address", f"127.0.0.1:{free_port()}"]
    r = subprocess.run(promring_cmd() + [command, *where, "--tsdb.min-block-duration", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"promring {command}: invalid value '0' for --tsdb.min-block-duration: "
                                "must be greater than 0"), r.stderr
    assert not data.exists()


@pytest.mark.parametrize("args", [["compact", "--http-address", ""], ["query", "--grpc-address", ""]])
def test_an_empty_address_that_switches_a_server_off_is_accepted(args):
    """Regression: the start-up check refused ``--http-address ''`` for ``promring compact``
    (no HTTP server) and the querier's ``--grpc-address ''`` (no StoreAPI)."""
    import argparse
    from promring.cli import build_parser
    from promring.flagcheck import check_flags
    a = build_parser().parse_args(args + (["--objstore.config", "type: FILESYSTEM"] if args[0] == "compact" else []))
    assert isinstance(a, argparse.Namespace)
    check_flags(a)  # raises FlagError if refused
