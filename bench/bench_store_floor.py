"""The floor under a warm store Series call, as a ladder: the server's CPU per call (the
scheduler's run time of all its threads, /proc/PID/task/*/schedstat) for, from the bottom up,

  (a) echo:   a bare asyncio Protocol echoing the bytes of a small call (no HTTP/2 at all),
  (b) frames: the same with our HTTP/2 connection state (storeapi.h2serverconn) parsing the
              call and answering a fixed empty message, no gRPC server around it,
  (c) no-op:  our gRPC server (storeapi.h2server) with a handler answering an empty message,
  (d) Info:   ``promring store``'s ``thanos.info.Info/Info``,
  (e) Series: its Series calls (24 h matching nothing, bench_store_call.py's one series at
              1 h and 24 h),

each over one connection, each call followed by ``--gap-ms`` of idle (as behind a querier: the
call starts on cold CPU caches), in alternating rounds. The differences between the rungs say
what each layer costs. ``--other DIR`` runs a second checkout's store (and gRPC server) beside
this one's for a before/after in one run (rungs (c)-(e) for both).

    python bench/bench_store_floor.py --blocks /work/scale/s1 --gap-ms 5
    python bench/bench_store_floor.py --blocks /work/scale/s1 --gap-ms 5 --other /work/main
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ECHO_BYTES = 120  # about what a small unary gRPC call is on the wire


def serve(kind: str) -> None:
    """A ladder rung's server (run from the checkout under test): prints its port, serves."""
    from storeapi.h2frames import literal
    from storeapi.h2serverconn import ENDED, ServerConnection

    headers = b"\x88" + literal(b"content-type", "application/grpc")
    ok = literal(b"grpc-status", "0")

    class Echo(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.t.write(data)

    class Frames(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.t, self.conn = transport, ServerConnection(100, 4 << 20)
            self.conn.initiate_connection()
            transport.write(self.conn.data_to_send())

        def data_received(self, data: bytes) -> None:
            for ev in self.conn.receive(data):
                if ev[0] == ENDED:
                    self.conn.send_headers(ev[1], headers)
                    self.conn.send_data(ev[1], b"\0\0\0\0\0")
                    self.conn.send_headers(ev[1], ok, end_stream=True)
            if self.conn.out:
                self.t.write(self.conn.data_to_send())

    async def main() -> None:
        if kind == "noop":
            import grpc
            from storeapi.h2server import H2GrpcServer

            async def noop(req: bytes, context) -> bytes:
                return b""
            srv = H2GrpcServer()
            srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
                "t.T", {"Noop": grpc.unary_unary_rpc_method_handler(noop)})])
            port = await srv.bind("127.0.0.1:0")
            await srv.start()
        else:
            loop = asyncio.get_running_loop()
            srv = await loop.create_server(Echo if kind == "echo" else Frames, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())


def start_rung(repo: Path, kind: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([str(repo / ".venv" / "bin" / "python"), __file__, "--serve", kind],
                            cwd=repo, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    return proc, int(proc.stdout.readline())


async def run(servers: dict[str, tuple[int, object]], rounds: int, calls: int,
              gap_s: float) -> None:
    """``servers``: name -> (pid, async call); every kind alternates with the others."""
    from bench_fixed_cost import cpu_s
    for _, call in servers.values():
        for _ in range(50):  # warm up
            await call()
    cpu = dict.fromkeys(servers, 0.0)
    for _ in range(rounds):
        for name, (pid, call) in servers.items():
            c0 = cpu_s(pid)
            for _ in range(calls):
                await call()
                time.sleep(gap_s)  # blocks this client: the server idles meanwhile
            cpu[name] += cpu_s(pid) - c0
    for name, total in cpu.items():
        print(f"{name}: server CPU per call {total / rounds / calls * 1e6:.0f} us", flush=True)


async def ladder(a: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen]) -> None:
    from bench_store_call import HOUR_MS, MATCHERS, end_of_blocks, frames, start_store
    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi.h2client import H2Channel
    from storeapi.wire import series_request

    nothing = [Matcher(MatchType.EQ, "__name__", "x"), Matcher(MatchType.EQ, "instance", "none")]
    end_ms = end_of_blocks(a.blocks)
    checkouts = [("", REPO)] + ([(f" [{a.other}]", a.other.resolve())] if a.other else [])
    servers: dict[str, tuple[int, object]] = {}
    channels: list[H2Channel] = []
    streams: list[asyncio.StreamWriter] = []

    def channel(port: int) -> H2Channel:
        channels.append(H2Channel(f"127.0.0.1:{port}", "identity"))
        return channels[-1]

    proc, port = start_rung(REPO, "echo")
    procs.append(proc)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    streams.append(writer)

    async def echo() -> None:
        writer.write(b"e" * ECHO_BYTES)
        await reader.readexactly(ECHO_BYTES)
    servers["(a) echo"] = (proc.pid, echo)
    proc, port = start_rung(REPO, "frames")
    procs.append(proc)
    ch_frames = channel(port)
    servers["(b) HTTP/2 frames"] = (proc.pid, lambda: ch_frames.unary("/t.T/Noop", b"", 60))
    for label, repo in checkouts:
        proc, port = start_rung(repo, "noop")
        procs.append(proc)
        servers[f"(c) gRPC no-op{label}"] = (proc.pid, lambda ch=channel(port): ch.unary(
            "/t.T/Noop", b"", 60))
    stores = []
    for label, repo in checkouts:
        work = tmp / f"store{len(procs)}"
        work.mkdir()
        proc, port = start_store(repo, a.blocks, work)
        procs.append(proc)
        stores.append((label, proc.pid, channel(port)))
    for label, pid, ch in stores:  # each kind on every checkout in turn
        servers[f"(d) Info{label}"] = (pid, lambda ch=ch: ch.unary(
            "/thanos.info.Info/Info", b"", 60))
    for hours, matchers, what in [(24, nothing, "no match"), (1, MATCHERS, "one series"),
                                  (24, MATCHERS, "one series")]:
        req = series_request(end_ms - hours * HOUR_MS - 300_000, end_ms, matchers, False, (),
                             0, 256, 0, True)
        for label, pid, ch in stores:
            servers[f"(e) Series {hours} h, {what}{label}"] = (
                pid, lambda ch=ch, req=req: frames(ch, req))
    try:
        await run(servers, a.rounds, a.calls, a.gap_ms / 1000)
    finally:
        for ch in channels:
            await ch.close()
        for w in streams:
            w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, help="bench_scale.py --keep directory")
    ap.add_argument("--other", type=Path, help="a second promring checkout to compare")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    ap.add_argument("--calls", type=int, default=1000, help="calls per kind and round")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="idle time after each call")
    ap.add_argument("--serve", choices=["echo", "frames", "noop"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return
    if a.blocks is None:
        ap.error("--blocks is required")
    sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]
    from sidebyside import stop_all
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-floor-"))
    procs: list[subprocess.Popen] = []
    try:
        asyncio.run(ladder(a, tmp, procs))
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
