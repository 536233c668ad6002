"""Longer fuzz runs than the test suite's, with a report.

    python -m tests.fuzz --examples 20000               # the write path of a real receiver
    python -m tests.fuzz --target decoder --examples 100000
    python -m tests.fuzz --safe                         # avoid the write-core issues

The write-path report counts bodies, 5xx answers, crashes (the process died), hangs (a request
or readiness probe that did not answer within 30 s) and the receiver's RSS at start and end;
then it restarts the receiver (SIGTERM, then kill -9) and checks that it comes back ready.
Exit status 1 if anything but 2xx/4xx was seen.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests
from hypothesis import HealthCheck, assume, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for harness

from .bodies import (EXCLUDE_KNOWN_WRITE_CORE_ISSUES, Body, bodies,  # noqa: E402
                     hits_known_write_core_issue)
from .test_fuzz_decoder import decode_one  # noqa: E402
from .test_fuzz_write_path import WritePathTarget  # noqa: E402


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def run_decoder(n: int) -> int:
    count = [0]

    @_settings(n)
    @given(bodies())
    def one(body: Body) -> None:
        count[0] += 1
        decode_one(body)

    t0 = time.monotonic()
    one()
    print(f"decoder: {count[0]} bodies in {time.monotonic() - t0:.0f}s, no crash, no unexpected error")
    return 0


def run_write_path(n: int, safe: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="promring-fuzz-"))
    target = WritePathTarget(workdir)
    rss_start = target.rss_kib()
    stats = {"bodies": 0, "hangs": 0, "crashes": 0}
    t0 = time.monotonic()

    @_settings(n)
    @given(bodies(safe=safe))
    def one(body: Body) -> None:
        if safe:
            assume(not hits_known_write_core_issue(body))
        if target.proc.proc.poll() is not None:
            stats["crashes"] += 1
            target.proc.start()
        stats["bodies"] += 1
        try:
            target.post(body)
        except requests.RequestException:
            stats["hangs"] += 1
        if stats["bodies"] % 500 == 0:
            print(f"  {stats['bodies']} bodies, hangs {stats['hangs']}, crashes "
                  f"{stats['crashes']}, codes {dict(sorted(target.codes.items()))}, "
                  f"RSS {target.rss_kib() // 1024} MiB", flush=True)

    try:
        one()
        rss_end = target.rss_kib()
        ready = target.ready()
        sigterm_rc = target.proc.stop()
        target.proc.start()
        target.proc.kill9()
        target.proc.start()
        restarted = target.ready()
    finally:
        target.proc.stop()
    n5xx = sum(c for code, c in target.codes.items() if code >= 500)
    print(f"write path: {stats['bodies']} bodies in {time.monotonic() - t0:.0f}s; codes "
          f"{dict(sorted(target.codes.items()))}; 5xx {n5xx}; crashes {stats['crashes']}; hangs "
          f"{stats['hangs']}; RSS {rss_start // 1024} -> {rss_end // 1024} MiB; ready after run "
          f"{ready}; SIGTERM exit {sigterm_rc}; ready after SIGTERM and kill -9 restarts {restarted}")
    for code, text, body in target.server_errors[:5]:
        print(f"  {code} {text.strip()[:200]}\n    {body!r}"[:2000])
    print(f"  receiver log: {target.proc.log_path}")
    bad = n5xx or stats["crashes"] or stats["hangs"] or not ready or sigterm_rc != 0 or not restarted
    return 1 if bad else 0


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=["write-path", "decoder"], default="write-path")
    p.add_argument("--examples", type=int, default=10_000)
    p.add_argument("--safe", action="store_true", default=EXCLUDE_KNOWN_WRITE_CORE_ISSUES,
                   help="avoid the write-core issues of issue 10 (see bodies.py)")
    a = p.parse_args()
    if a.target == "decoder":
        sys.exit(run_decoder(a.examples))
    sys.exit(run_write_path(a.examples, a.safe))


if __name__ == "__main__":
    main()
