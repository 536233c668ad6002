"""Big C results (receiver/tsdb/bigbytes.h) are advised into transparent huge pages.

A query over millions of samples (histogram_quantile over 21,600 bucket series at 6 h, issue 13)
decodes hundreds of MiB per query into fresh memory; faulted in 4 KiB at a time, that cost as
much as the decode itself. The advice shows as the ``hg`` flag on the mapping holding the
buffer (/proc/self/smaps VmFlags), whether or not the kernel then finds a huge page."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from querier.promql.rangefuncs import Windows, batch_bounds, f_rate
from receiver.tsdb.chunkenc import decode_series, encode

SMAPS = Path("/proc/self/smaps")
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = pytest.mark.skipif(not SMAPS.exists() or not THP.exists(),
                                reason="needs Linux with transparent huge pages compiled in")


def _vm_flags(addr: int) -> set[str]:
    """The VmFlags of the mapping that holds ``addr``."""
    inside = False
    for line in SMAPS.read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("VmFlags:"):
            return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {addr:#x}")


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _many_series(n: int, per_chunk: int = 120) -> list[list[tuple[int, int, bytes]]]:
    ts = 1_000_000 + np.arange(per_chunk, dtype=np.int64) * 30_000
    chunk = encode(ts, np.arange(per_chunk, dtype=np.float64))
    return [[(int(ts[0]), int(ts[-1]), chunk)]] * n


def test_decoded_samples_of_a_big_batch_are_advised_huge_pages():
    series = _many_series(8_000)  # 960,000 samples: 7.3 MiB per column
    ts, vals, offs = decode_series(series, 0, 1 << 62)
    assert len(ts) == 960_000 and offs[-1] == len(ts)
    assert "hg" in _vm_flags(_addr(ts) + len(ts) * 4)
    assert "hg" in _vm_flags(_addr(vals) + len(vals) * 4)


def test_window_arrays_of_a_big_range_call_are_advised_huge_pages():
    series = _many_series(8_000)
    ts, vals, offs = decode_series(series, 0, 1 << 62)
    end = 1_000_000 + np.arange(0, 120 * 30_000, 30_000, dtype=np.int64)  # 120 steps
    lo, hi = batch_bounds(ts, offs, end, 300_000)  # 960,000 windows
    assert "hg" in _vm_flags(_addr(lo) + len(lo) * 4)
    T = len(end)
    r, ok = f_rate(ts, vals, lo, hi, Windows(np.tile(end, 8_000), 300_000, np.tile(end, 8_000)), ())
    assert "hg" in _vm_flags(_addr(r) + len(r) * 4)
    assert len(r) == len(ok) == 8_000 * T

