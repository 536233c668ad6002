"""Block write/read speed and size: our writer/reader vs promtool-made blocks, same samples.

Not a test: prints samples/s and bytes/sample. Data: one 2 h block of 15 s scrapes with a
little jitter; a quarter each of counters, noisy two-decimal gauges, slow integer gauges and
constant series. promtool's time includes parsing the OpenMetrics text, so its write speed
is an upper bound on Prometheus's block writing cost, not a like-for-like number.

    /work/venv/bin/python bench/bench_block.py [--series 5000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from receiver.tsdb.block import BlockReader, cut_chunks, write_block, write_block_from_samples
from receiver.tsdb.chunkenc import decode_many

BLOCK = 7_200_000
T0 = 1_700_002_800_000 - 1_700_002_800_000 % BLOCK  # 2 h aligned, like promtool's blocks


def make_series(n: int, rng: np.random.Generator) -> list[tuple[tuple, np.ndarray, np.ndarray]]:
    steps = BLOCK // 15_000 - 1
    out = []
    for i in range(n):
        ts = T0 + 5_000 + np.cumsum(15_000 + rng.integers(-20, 21, steps)).astype(np.int64)
        kind = i % 4
        if kind == 0:
            vals = np.cumsum(rng.integers(0, 50, steps)).astype(np.float64)
        elif kind == 1:
            vals = np.round(rng.normal(500, 50, steps), 2)
        elif kind == 2:
            vals = 1e6 + np.cumsum(rng.integers(-4, 5, steps) * 4096).astype(np.float64)
        else:
            vals = np.full(steps, 1.0)
        lbls = (("__name__", f"bench_metric_{i % 50}"), ("instance", f"host-{i // 50}:9100"),
                ("job", "node"))
        out.append((lbls, ts, vals))
    out.sort(key=lambda s: s[0])
    return out


def openmetrics(series: list, path: Path) -> None:
    with open(path, "w") as f:
        by_name: dict[str, list] = {}
        for s in series:
            by_name.setdefault(s[0][0][1], []).append(s)
        for name, group in by_name.items():
            f.write(f"# TYPE {name} gauge\n")
            for lbls, ts, vals in group:
                ls = ",".join(f'{k}="{v}"' for k, v in lbls[1:])
                f.writelines(f"{name}{{{ls}}} {v!r} {t // 1000}.{t % 1000:03d}\n"
                             for t, v in zip(ts.tolist(), vals.tolist()))
        f.write("# EOF\n")


def block_bytes(bdir: Path) -> int:
    return (bdir / "index").stat().st_size + sum(p.stat().st_size for p in (bdir / "chunks").iterdir())


def read_all(bdir: Path) -> int:
    n = 0
    with BlockReader(bdir) as br:
        for _, chunks in br.series(-2**62, 2**62, []):
            t, _ = decode_many([c[2] for c in chunks], -2**62, 2**62)
            n += len(t)
    return n


def best(fn, repeat: int) -> tuple[float, object]:
    top, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        top = min(top, time.perf_counter() - t0)
    return top, res


def measure(n_series: int = 5000, repeat: int = 3) -> dict[str, float]:
    """Prints and returns write/read speed and bytes per sample, ours and promtool's."""
    args = argparse.Namespace(series=n_series, repeat=repeat)
    out: dict[str, float] = {}
    series = make_series(args.series, np.random.default_rng(42))
    total = sum(len(s[1]) for s in series)
    tmp = Path(tempfile.mkdtemp(prefix="bench_block_"))
    try:
        def ours_from_samples() -> Path:
            d = tmp / f"ours{time.perf_counter_ns()}"
            m = write_block_from_samples(d, series, T0, T0 + BLOCK)
            return d / m.ulid

        t_write, ours = best(ours_from_samples, args.repeat)
        chunked = [(lbls, cut_chunks(ts, vals, T0, T0 + BLOCK)) for lbls, ts, vals in series]

        def ours_from_chunks() -> Path:
            d = tmp / f"chunks{time.perf_counter_ns()}"
            m = write_block(d, chunked, T0, T0 + BLOCK)
            return d / m.ulid

        t_write_chunks, _ = best(ours_from_chunks, args.repeat)
        t_read, n = best(lambda: read_all(ours), args.repeat)
        assert n == total
        print(f"samples: {total:,} in {args.series:,} series")
        print(f"ours     write (encode + block) {total / t_write / 1e6:7.2f} M samples/s  ({t_write:.2f} s)")
        print(f"ours     write (block only)     {total / t_write_chunks / 1e6:7.2f} M samples/s  ({t_write_chunks:.2f} s)")
        print(f"ours     read + decode          {total / t_read / 1e6:7.2f} M samples/s  ({t_read:.2f} s)")
        ob = block_bytes(ours)
        out.update(samples=total, write=total / t_write, read=total / t_read, bytes=ob, bytes_per_sample=ob / total)
        print(f"ours     size {ob:,} B  {ob / total:.3f} bytes/sample  "
              f"(index {(ours / 'index').stat().st_size:,} B)")

        promtool = shutil.which("promtool")
        if promtool is None:
            print("promtool not installed: no comparison")
            return out
        om = tmp / "in.om"
        openmetrics(series, om)

        def theirs() -> Path:
            d = tmp / f"prom{time.perf_counter_ns()}"
            subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(d)],
                           check=True, capture_output=True)
            blocks = [p for p in d.iterdir() if (p / "meta.json").exists()]
            assert len(blocks) == 1, blocks
            return blocks[0]

        t_prom, pb = best(theirs, args.repeat)
        t_read_p, n = best(lambda: read_all(pb), args.repeat)
        assert n == total
        pbytes = block_bytes(pb)
        print(f"promtool write (parse OM text + block) {total / t_prom / 1e6:5.2f} M samples/s  ({t_prom:.2f} s)")
        print(f"ours     read + decode of promtool block {total / t_read_p / 1e6:5.2f} M samples/s")
        print(f"promtool size {pbytes:,} B  {pbytes / total:.3f} bytes/sample  "
              f"(index {(pb / 'index').stat().st_size:,} B)")
        print(f"size ours/promtool: {ob / pbytes:.4f}")
        out.update(promtool_bytes=pbytes, promtool_bytes_per_sample=pbytes / total, size_ratio=ob / pbytes)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    measure(a.series, a.repeat)


if __name__ == "__main__":
    main()
