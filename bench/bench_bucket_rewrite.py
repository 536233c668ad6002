"""``tools bucket rewrite`` against Thanos v0.42.4's on the same block. Not a test: prints
one line with wall and CPU time of each command (the CPU ratio is the steadier one on a
shared machine).

One 2h block of ``--series`` series x 480 samples (15 s) with external labels, copied into
two filesystem buckets; each tool deletes a tenth of the series whole and half an hour of
another tenth (the same deletion request file), with ``--no-dry-run``.

    .venv/bin/python bench/bench_bucket_rewrite.py [--series 20000]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from receiver.tsdb.block import write_block_from_samples  # noqa: E402

HOUR = 3_600_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20_000)
    n = ap.parse_args().series
    from peers import peer
    from harness import promring_cmd
    root = Path(tempfile.mkdtemp(prefix="bench-rewrite-"))
    try:
        t0 = (int(time.time() * 1000) // HOUR - 4) * HOUR
        ts = t0 + np.arange(0, 2 * HOUR, 15_000)
        rng = np.random.default_rng(1)
        series = ((("__name__", "bench_metric"), ("i", f"{i:06d}"), ("job", "j"),
                   ("team", f"t{i % 10}")) for i in range(n))
        (root / "promring").mkdir()
        meta = write_block_from_samples(root / "promring", ((l, ts, np.round(rng.normal(100, 10, len(ts)), 2))
                                                            for l in series), t0, t0 + 2 * HOUR,
                                        thanos_meta={"labels": {"cluster": "a"}, "source": "receive"})
        shutil.copytree(root / "promring", root / "thanos")
        (root / "delete.yml").write_text(
            "- matchers: '{team=\"t3\"}'\n- matchers: '{team=\"t5\"}'\n"
            f"  intervals: [{{mint: {t0 + HOUR}, maxt: {t0 + HOUR + 1_800_000}}}]\n")
        res = {}
        for tool, exe in (("promring", promring_cmd()), ("thanos", [peer("thanos")])):
            (root / f"{tool}.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {root / tool}\n")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(exe + ["tools", "bucket", "rewrite", f"--objstore.config-file={root / (tool + '.yml')}",
                                  "--id", meta.ulid, f"--rewrite.to-delete-config-file={root / 'delete.yml'}",
                                  "--no-dry-run", f"--tmp.dir={root / ('tmp-' + tool)}"],
                           check=True, capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            res[tool] = (time.perf_counter() - t,
                         after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        (pw, pc), (tw, tc) = res["promring"], res["thanos"]
        print(f"{n} series x 480 samples: wall promring {pw:.1f} s, thanos {tw:.1f} s "
              f"(ratio {pw / tw:.2f}); CPU promring {pc:.1f} s, thanos {tc:.1f} s (ratio {pc / tc:.2f})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
