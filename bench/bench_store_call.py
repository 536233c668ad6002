"""The store gateway's warm cost of one small Series call, as the querier makes it (its own
HTTP/2 client, identity encoding, a grpc-timeout, batch 256): ``x{instance="i-00007"}`` over
the last 1 h (one block) and 24 h (twelve blocks) of bench_scale.py's blocks, the store's CPU
time per call (utime + stime from /proc over ``--calls`` calls) and the wall median. Each
checkout (this one, and ``--other DIR`` with its own .venv) runs its own ``promring store``,
in alternating rounds; the answers' bytes are compared between them.

Back-to-back calls keep the store's CPU caches warm; behind a querier the store idles a few ms
between calls (the querier's own work, the HTTP round trip), and every call then starts cold,
costing 2-3x the CPU on this machine. ``--gap-ms`` idles the store that long between calls to
measure that case (the gap is not in the wall figures).

``--cold`` measures the cold one-series call instead (bench_fixed_cost's --cold, without the
querier): after one Series call for all of ``x`` at the range (what the dashboard's
aggregations leave cached), every call asks for an instance no call asked for before; the
answers' digest is over all cold calls. ``--pid-file`` writes the stores' pids (for a profiler).

    python bench/bench_store_call.py --blocks /work/scale/s1 --other /work/main
    python bench/bench_store_call.py --blocks /work/scale/s1 --gap-ms 3
    python bench/bench_store_call.py --blocks /work/scale/s1 --cold --rounds 4 --calls 200 \
        --gap-ms 3 --other /work/main
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from bench_fixed_cost import cpu_s  # noqa: E402
from harness import free_port, wait_ready  # noqa: E402
from receiver.tsdb.labels import Matcher, MatchType  # noqa: E402
from storeapi.h2client import H2Channel  # noqa: E402
from storeapi.wire import series_request  # noqa: E402

HOUR_MS = 3_600_000
MATCHERS = [Matcher(MatchType.EQ, "__name__", "x"), Matcher(MatchType.EQ, "instance", "i-00007")]
BROAD = [Matcher(MatchType.EQ, "__name__", "x")]


def cold_matchers(i: int) -> list[Matcher]:
    """The ``i``-th fresh one-series selection."""
    return [MATCHERS[0], Matcher(MatchType.EQ, "instance", "i-%05d" % i)]


def end_of_blocks(blocks: Path) -> int:
    """The queries' end (ms): 30 s before the end of bench_scale.py's 2 h blocks; exits if
    there are none."""
    metas = [json.loads(m.read_text()) for m in blocks.glob("*/meta.json")]
    if not metas:
        sys.exit(f"no blocks under {blocks}")
    return min(m["minTime"] for m in metas) + 2 * len(metas) * HOUR_MS - 30_000


def start_store(repo: Path, blocks: Path, work: Path) -> tuple[subprocess.Popen, int]:
    (work / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {blocks}\n")
    sg, sh = free_port(), free_port()
    proc = subprocess.Popen([str(repo / ".venv" / "bin" / "promring"), "store", "--data-dir",
                             str(work / "data"), "--objstore.config-file",
                             str(work / "objstore.yml"), "--grpc-address", f"127.0.0.1:{sg}",
                             "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"],
                            cwd=repo)
    wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=proc)
    return proc, sg


async def frames(ch: H2Channel, req: bytes) -> list[bytes]:
    return [f async for f in ch.unary_stream("/thanos.Store/Series", req, 60)]


async def run(stores: dict[str, tuple[subprocess.Popen, int]], end_ms: int, hours: list[int],
              rounds: int, calls: int, gap_s: float = 0.0, cold: bool = False) -> None:
    chans = {k: H2Channel(f"127.0.0.1:{port}", "identity") for k, (_, port) in stores.items()}
    try:
        for name, ch in chans.items():  # gRPC listens once the first sync is done
            for _ in range(300):
                try:
                    await ch.unary("/thanos.info.Info/Info", b"", 10)
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.2)
        for r, h in enumerate(hours):
            def request(ms: list[Matcher]) -> bytes:
                return series_request(end_ms - h * HOUR_MS - 300_000, end_ms, ms, False, (), 0,
                                      256, 0, True)
            req = request(MATCHERS)
            digests = {}
            hashes = {k: hashlib.sha256() for k in chans}
            for name, ch in chans.items():
                if cold:
                    await frames(ch, request(BROAD))
                    continue
                for _ in range(50):  # warm up
                    got = await frames(ch, req)
                digests[name] = hashlib.sha256(b"\0".join(got)).hexdigest()[:12]
            cpu = dict.fromkeys(chans, 0.0)
            wall: dict[str, list[float]] = {k: [] for k in chans}
            for i in range(rounds):
                for name, ch in chans.items():
                    pid = stores[name][0].pid
                    c0 = cpu_s(pid)
                    for j in range(calls):
                        if cold:  # every store the same fresh series, each exactly once
                            req = request(cold_matchers(r * rounds * calls + i * calls + j))
                        t = time.perf_counter()
                        got = await frames(ch, req)
                        wall[name].append(time.perf_counter() - t)
                        if cold:
                            hashes[name].update(b"\0".join(got) + b"\1")
                        if gap_s:
                            time.sleep(gap_s)  # blocks this client: the store idles meanwhile
                    cpu[name] += cpu_s(pid) - c0
            if cold:
                digests = {k: v.hexdigest()[:12] for k, v in hashes.items()}
            for name in chans:
                print(f"{h} h{' cold' if cold else ''} {name}: store CPU per call {cpu[name] / rounds / calls * 1e6:.0f} us, "
                      f"wall median {statistics.median(wall[name]) * 1e6:.0f} us, "
                      f"answer sha256 {digests[name]}", flush=True)
    finally:
        for ch in chans.values():
            await ch.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, required=True, help="bench_scale.py --keep directory")
    ap.add_argument("--other", type=Path, help="a second promring checkout to compare")
    ap.add_argument("--hours", type=lambda s: [int(x) for x in s.split(",")], default=[1, 24])
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds per store")
    ap.add_argument("--calls", type=int, default=500, help="calls per round")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="idle time between calls (3 is about what a querier in front leaves)")
    ap.add_argument("--cold", action="store_true", help="a fresh series every call (see above)")
    ap.add_argument("--pid-file", type=Path, help="write the stores' pids here, one a line")
    a = ap.parse_args()
    if a.cold and a.rounds * a.calls * len(a.hours) > 7600:
        sys.exit("--cold: at most 7,600 fresh series (rounds x calls x hours)")
    end_ms = end_of_blocks(a.blocks)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-call-"))
    stores: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name, repo in [("promring", REPO)] + ([(str(a.other), a.other.resolve())]
                                                  if a.other else []):
            (tmp / name.replace("/", "_")).mkdir()
            stores[name] = start_store(repo, a.blocks, tmp / name.replace("/", "_"))
        if a.pid_file:
            a.pid_file.write_text("".join(f"{p.pid}\n" for p, _ in stores.values()))
        asyncio.run(run(stores, end_ms, a.hours, a.rounds, a.calls, a.gap_ms / 1000, a.cold))
    finally:
        for proc, _ in stores.values():
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
