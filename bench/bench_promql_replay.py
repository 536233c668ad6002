"""The querier's PromQL evaluation alone (issue 13): a store gateway's answers for the dashboard
queries of bench_scale.py are fetched once, then replayed in-process into ``Engine.range``
(merge/decode of the chunks included, no gRPC, no HTTP), so the querier's own CPU per query
can be compared between versions without the store's or the network's share.

    python bench/bench_scale.py --keep /tmp/blocks                  # once, writes the blocks
    python bench/bench_promql_replay.py --blocks /tmp/blocks --capture /tmp/answers.pkl
    python bench/bench_promql_replay.py --replay /tmp/answers.pkl   # any version, e.g. before:
    PYTHONPATH=/path/to/old/checkout python bench/bench_promql_replay.py --replay /tmp/answers.pkl

Prints CPU ms (process time) per query, mean of ``--rounds`` after one warm-up run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# appended, not prepended: an installed or PYTHONPATH checkout of another version is what runs
sys.path.append(str(REPO / "tests"))
sys.path.append(str(REPO))

HOUR_MS = 3_600_000
QUERIES = ["sum by (job) (rate(x[5m]))", "count by (job) (x)", "topk(10, rate(x[5m]))",
           "histogram_quantile(0.99, sum by (le, job) (rate(b[5m])))"]


def capture(blocks: Path, hours: float, out: Path) -> None:
    """The raw Series answers (as the querier's StoreAPI client returns them) for x and b."""
    from harness import free_port, promring_cmd, wait_ready
    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi.client import StoreClient
    metas = sorted(blocks.glob("*/meta.json"))
    if not metas:
        sys.exit(f"no blocks under {blocks}: run bench_scale.py --keep {blocks} first")
    end = json.loads(metas[0].read_text())["minTime"] + 2 * len(metas) * HOUR_MS - 30_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    (tmp / "objstore.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {blocks}\n")
    sg, sh = free_port(), free_port()
    store = subprocess.Popen(promring_cmd() + [
        "store", "--data-dir", str(tmp / "store"), "--objstore.config-file", str(tmp / "objstore.yml"),
        "--grpc-address", f"127.0.0.1:{sg}", "--http-address", f"127.0.0.1:{sh}", "--log.level", "warn"])
    try:
        wait_ready(f"http://127.0.0.1:{sh}/-/ready", timeout=600, proc=store)

        async def fetch() -> dict:
            client = StoreClient(f"127.0.0.1:{sg}", native_histograms=True)
            got: dict = {"end": end, "hours": hours}
            mint = end - int(hours * HOUR_MS) - 600_000  # the 5m windows and lookback before
            for name in ("x", "b"):
                got[name] = (await client.series_with_warnings(
                    mint, end, [Matcher(MatchType.EQ, "__name__", name)])).series
            await client.close()
            return got
        answers = asyncio.run(fetch())
    finally:
        store.terminate()
        store.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    out.write_bytes(pickle.dumps(answers))
    print(f"{len(answers['x'])} x and {len(answers['b'])} b series over {hours} h -> {out}")


def replay(path: Path, rounds: int) -> None:
    from querier.fanout import merge_raw_series
    from querier.promql import Engine
    answers = pickle.loads(path.read_bytes())

    class Replayed:
        def select(self, matchers, mint, maxt):
            name = next(m.value for m in matchers if m.name == "__name__")
            return merge_raw_series(answers[name], mint, maxt)

    end = answers["end"]
    start = end - int(answers["hours"] * HOUR_MS)
    step = max((end - start) // 239, 1)  # 240 steps, as bench_scale.py
    engine = Engine()
    for q in QUERIES:
        engine.range(Replayed(), q, start, end, step)
        t0 = time.process_time()
        for _ in range(rounds):
            engine.range(Replayed(), q, start, end, step)
        print(f"{q}: {1000 * (time.process_time() - t0) / rounds:.1f} ms CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=Path, help="bench_scale.py --keep directory (with --capture)")
    ap.add_argument("--hours", type=float, default=1.0, help="query range")
    ap.add_argument("--capture", type=Path, help="write the store's answers here")
    ap.add_argument("--replay", type=Path, help="replay answers written by --capture")
    ap.add_argument("--rounds", type=int, default=10, help="timed runs per query")
    a = ap.parse_args()
    if a.capture:
        if not a.blocks:
            ap.error("--capture needs --blocks")
        capture(a.blocks, a.hours, a.capture)
    if a.replay:
        replay(a.replay, a.rounds)
    if not (a.capture or a.replay):
        ap.error("give --capture and/or --replay")


if __name__ == "__main__":
    main()
