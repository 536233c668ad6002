"""Query flags are validated before anything is served: a value the querier cannot work with
(no query slot, a zero timeout, an endpoint without a port) is a one-line error and exit 2,
instead of a process that starts and then hangs every query."""
from __future__ import annotations

import pytest

from promring.cli import main

BAD = [
    (["--query.max-concurrent", "0"], "--query.max-concurrent must be at least 1"),
    (["--query.max-concurrent", "-3"], "--query.max-concurrent must be at least 1"),
    (["--query.timeout", "0s"], "--query.timeout must be greater than 0"),
    (["--query.timeout", "soon"], "--query.timeout: not a valid duration: 'soon'"),
    (["--query.lookback-delta", "0"], "--query.lookback-delta must be greater than 0"),
    (["--query.max-samples", "-1"], "--query.max-samples must not be negative"),
    (["--endpoint", "store-1"], "--endpoint 'store-1': want host:port"),
    (["--endpoint", "store-1:http"], "--endpoint 'store-1:http': port must be a number from 1 to 65535"),
    (["--endpoint", "store-1:70000"], "--endpoint 'store-1:70000': port must be a number from 1 to 65535"),
    (["--endpoint", ":10901"], "--endpoint ':10901': want host:port"),
    (["--endpoint", "[::1:10901"], "--endpoint '[::1:10901': bad brackets around the host"),
]


# promring up has the same query flags, but no --endpoint (its querier's endpoints are its own).
CASES = [("query", f, m) for f, m in BAD] + [("up", f, m) for f, m in BAD if f[0] != "--endpoint"]


@pytest.mark.parametrize("cmd,flags,message", CASES)
def test_bad_query_flags_stop_the_start_with_one_line(cmd, flags, message, capsys, tmp_path):
    args = [cmd, "--http-address", "127.0.0.1:0", *flags]
    if cmd == "up":
        args += ["--data-dir", str(tmp_path / "data")]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    # One line naming the flag (promring/flagcheck.py words it for the flags it knows; the
    # querier's own check for the rest): which of the two catches it first does not matter.
    flag = flags[0]
    assert err.endswith("\n") and err.count("\n") == 1 and flag in err, err
    from promring.flagcheck import CHECKS
    if flag in {f for f, _ in CHECKS.values()}:
        assert err.startswith(f"promring {cmd}: invalid value "), err
        assert f" for {flag}: " in err, err
    else:
        assert err == f"promring {cmd}: {message}\n"
    assert not (tmp_path / "data").exists(), "nothing may start before the flags are checked"


def test_good_endpoint_spellings_pass():
    from querier.config import QueryConfig
    QueryConfig(endpoints=["127.0.0.1:10901", "[::1]:10901", "store.example:1", "a-b_c:65535"]).validate()
