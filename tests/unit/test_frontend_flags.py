"""``promring query-frontend`` takes Thanos v0.42.4's ``thanos query-frontend`` flags with the
same defaults, and refuses values it cannot run with before starting."""
from __future__ import annotations

import argparse
import re
import subprocess

import pytest

from frontend.config import InMemoryCacheConfig
from frontend.flags import frontend_config
from peers import peer
from promring.cli import build_parser

# Thanos's hidden flags (registered with .Hidden(), so absent from --help).
THANOS_HIDDEN = {"query-frontend.tenant-header": "THANOS-TENANT",
                 "query-frontend.default-tenant-id": "default-tenant",
                 "query-frontend.tenant-certificate-field": ""}


def _ours() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["query-frontend"]


def _thanos_flags() -> dict[str, str | None]:
    text = subprocess.run([peer("thanos"), "query-frontend", "--help"], capture_output=True,
                          text=True, timeout=60).stdout + subprocess.run(
        [peer("thanos"), "query-frontend", "--help"], capture_output=True, text=True,
        timeout=60).stderr
    flags: dict[str, str | None] = dict(THANOS_HIDDEN)
    for m in re.finditer(r"--(\[no-\])?([a-z][a-z0-9._-]*)(?:=(\S*))?", text):
        value = m.group(3)
        flags[m.group(2)] = ("true" if m.group(1) else None) if value is None else value.strip('"')
    return flags


def test_the_hidden_flags_are_in_thanos_s_binary():
    """THANOS_HIDDEN are not in --help: their names must at least be in the binary."""
    data = open(peer("thanos"), "rb").read()
    for name in THANOS_HIDDEN:
        assert name.encode() in data, name
    assert b"query-frontend.no-such-flag" not in data


def test_every_flag_is_thanos_s_with_thanos_s_default():
    theirs = _thanos_flags()
    for act in _ours()._actions:
        for opt in act.option_strings:
            name = opt.removeprefix("--")
            if not opt.startswith("--") or name in ("help", "version") or name.startswith("no-"):
                continue
            assert name in theirs, name
            want = theirs[name]
            if want is None or want.startswith("<") or act.default is None:
                continue
            got = act.default
            got = str(got).lower() if isinstance(got, bool) else ",".join(got) if isinstance(
                got, list) else str(got)
            if name in ("query-range.align-range-with-step", "query-range.partial-response",
                        "labels.partial-response", "query-range.request-downsampled"):
                assert got == "true", name  # Thanos: Default("true") for these
                continue
            if name in ("query-frontend.compress-responses", "web.disable-cors"):
                assert got == "false"
                continue
            assert got == want, (name, got, want)


def _cfg(*argv: str):
    return frontend_config(build_parser().parse_args(["query-frontend", *argv]))


def test_config_from_flags():
    cfg = _cfg("--query-range.response-cache-config",
               "type: IN-MEMORY\nconfig:\n  max_size_items: 7\n",
               "--query-frontend.log-queries-longer-than=-1s", "--query-frontend.forward-header",
               "X-A", "--query-frontend.forward-header", "X-B", "--no-query-range.partial-response")
    assert cfg.cache == InMemoryCacheConfig(0, 7, 0.0)
    assert cfg.split_interval_ms == 86_400_000 and cfg.max_freshness_ms == 60_000
    assert cfg.log_queries_longer_than_ms == -1000 and cfg.forward_headers == ("X-A", "X-B")
    assert cfg.partial_response is False and cfg.max_retries == 5 and cfg.align_range_with_step


@pytest.mark.parametrize("argv, message", [
    (["--query-range.response-cache-config", "type: NOPE"], "not supported"),
    (["--query-range.response-cache-config", "type: IN-MEMORY",
      "--query-range.response-cache-config-file", "x.yml"], "both"),
    (["--query-range.response-cache-config-file", "/nonexistent.yml"], "config-file"),
    (["--query-range.response-cache-config", "type: IN-MEMORY",
      "--query-range.split-interval", "0"], "split-interval must be greater than 0"),
    (["--query-range.max-retries-per-request", "0"], "at least 1"),
    (["--query-frontend.downstream-url", "localhost:9090"], "http://"),
    (["--query-range.split-interval", "soon"], "not a duration"),
])
def test_bad_flag_values_refused(argv, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _cfg(*argv)


def test_a_thanos_command_line_is_accepted_unchanged():
    cfg = _cfg("--http-address=0.0.0.0:19090", "--query-frontend.downstream-url=http://q:9090",
               "--query-range.split-interval=12h", "--query-range.request-downsampled",
               "--labels.max-query-parallelism=20", "--labels.response-cache-max-freshness=2m",
               "--query-frontend.downstream-tripper-config", "max_idle_conns_per_host: 100",
               "--no-web.disable-cors", "--http-grace-period=5s",
               "--query-frontend.compress-responses", "--query-frontend.log-queries-longer-than=5s",
               "--query-range.response-cache-config", "type: IN-MEMORY\nconfig:\n  max_size: 1GB\n")
    assert cfg.split_interval_ms == 12 * 3_600_000 and cfg.compress_responses
    assert cfg.downstream_url == "http://q:9090" and cfg.log_queries_longer_than_ms == 5000
