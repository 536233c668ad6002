"""The gRPC server's connection start, side by side with Thanos's (grpc-go): after the client
preface the first frame must be SETTINGS (an ACK counts); any other first frame closes the
connection unanswered and without a GOAWAY, on both."""
from __future__ import annotations

import asyncio

from harness import query_process
from peers import peer  # noqa: F401  (thanos() below fails clearly when the peer is missing)
from storeapi.h2frames import ACK, PING, PREFACE, SETTINGS, frame
from test_thanos_interop import thanos
from tests.unit.test_h2_framing import NOT_SETTINGS_FIRST, first_frame_answer, raw_exchange

PING_AFTER = frame(PING, 0, 0, b"p" * 8)


async def _probe(port: int) -> dict[str, tuple[list[int], bool]]:
    firsts = {**NOT_SETTINGS_FIRST, "SETTINGS ACK": frame(SETTINGS, ACK, 0)}
    answers = await asyncio.gather(*(raw_exchange(port, PREFACE + f + PING_AFTER)
                                     for f in firsts.values()))
    return {name: first_frame_answer(*a) for name, a in zip(firsts, answers)}


def test_first_frame_not_settings_is_handled_as_thanos_grpc_server(tmp_path):
    theirs = thanos(tmp_path, "thanos-query", "query").start(timeout=120)
    ours = query_process(tmp_path, "promring-query", []).start(timeout=120)
    try:
        got = {name: asyncio.run(asyncio.wait_for(_probe(p.ports["grpc"]), 60))
               for name, p in (("thanos", theirs), ("promring", ours))}
    finally:
        ours.stop()
        theirs.stop()
    assert got["thanos"] == {**{k: ([], True) for k in NOT_SETTINGS_FIRST},
                             "SETTINGS ACK": ([PING], False)}
    assert got["promring"] == got["thanos"]
