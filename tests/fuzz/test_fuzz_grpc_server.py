"""Fuzz target (c): our HTTP/2 gRPC server (storeapi.h2server) in a real ``promring store``,
fed hostile connections (h2conns.py) over a socket. After each: the store lives, logs no
traceback, answered well-formed HTTP/2 without UNKNOWN statuses, closed or went quiet in
bounded time, and a fresh grpcio client still gets the right Series answer.
``FUZZ_EXAMPLES`` sets the number of connections."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from storeapi.h2frames import DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, frame

from .grpc_target import GrpcServerTarget, completed_requests
from .h2conns import hostile_connections

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = GrpcServerTarget(tmp_path_factory.mktemp("h2fuzz"))
    yield t
    t.proc.stop()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunks=hostile_connections())
def test_hostile_connections_leave_the_store_serving(target, chunks):
    target.check(target.send(chunks))


def test_stops_cleanly_after_the_fuzzing(target):
    assert target.proc.stop() == 0, target.proc.log_text()[-3000:]


def test_only_opened_streams_are_owed_an_answer():
    """The hang check's own rule: END_STREAM on a stream the client opened with HEADERS is a
    request the server must answer; DATA on a stream it never opened (implicitly closed by a
    higher id) is not, and neither is a stream the client reset."""
    assert completed_requests([PREFACE, frame(HEADERS, END_HEADERS | END_STREAM, 5, b"\x82"),
                               frame(DATA, END_STREAM, 3, b"")]) == {5}
