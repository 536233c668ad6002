"""store.bytelimit: the bytes Thanos's store reserves for a block's reads, worked out from
its read plan (gap-based ranges of estimated sizes, 10000-series batches, refetches)."""
from __future__ import annotations

import numpy as np

from store.bytelimit import (CHUNK_ESTIMATE, PARTITION_GAP, SERIES_ESTIMATE, Estimates,
                             SeriesPlan, chunk_refetches, chunk_reservations, partitions)


def test_ranges_merge_items_within_the_gap_and_are_not_clamped() -> None:
    size = 100
    starts = np.array([0, 48, 96, 96 + size + PARTITION_GAP + 1, 10 ** 9], dtype=np.int64)
    nbytes, last = partitions(starts, size)
    assert nbytes.tolist() == [96 + size, size, size] and last.tolist() == [2, 3, 4]
    assert partitions(np.zeros(0, np.int64), size)[0].size == 0


def test_estimates_come_from_index_stats_only_when_below_thanos_defaults() -> None:
    assert Estimates.of_block(None) == Estimates(SERIES_ESTIMATE, CHUNK_ESTIMATE)
    small = {"index_stats": {"series_max_size": 48, "chunk_max_size": 300}}
    assert Estimates.of_block(small) == Estimates(48, 300)
    big = {"index_stats": {"series_max_size": 1 << 20, "chunk_max_size": 0}}
    assert Estimates.of_block(big) == Estimates(SERIES_ESTIMATE, CHUNK_ESTIMATE)


def test_series_are_planned_in_batches_with_the_refetch_of_each_ranges_last_entry() -> None:
    est = Estimates(series=64, chunk=CHUNK_ESTIMATE)
    refs = np.arange(10_003, dtype=np.int64) * 4  # entries 64 B apart: one range per batch
    plan = SeriesPlan.of(refs, est)
    assert plan.first == 9_999 * 64 + 64 and plan.last_refs().tolist() == [9_999, 10_002]
    got = plan.reservations(np.array([64, 70]), [[500], [7]])
    assert got == [("chunks", 500), ("series", 2 * 64 + 64), ("series", 71), ("chunks", 7)]


def test_chunks_are_planned_per_batch_and_segment_and_long_ones_fetched_again() -> None:
    est = Estimates(series=SERIES_ESTIMATE, chunk=1000)
    refs = [(1 << 32) | 8, (1 << 32) | 508, (2 << 32) | 8]  # two in segment 1, one in 2
    assert chunk_reservations(refs, [0, 2, 3], est) == [[500 + 1000, 1000]]
    # length uvarint (1, 2 or 3 bytes) + encoding byte + data, reserved when over 1000 B
    assert chunk_refetches(np.array([120, 997, 998, 20_000]), est) == [1001, 20_004]


def test_no_matched_series_reserve_nothing_more() -> None:
    plan = SeriesPlan.of(np.zeros(0, np.int64), Estimates())
    assert plan.first == 0 and plan.last_refs().size == 0
    assert plan.reservations(np.zeros(0, np.int64), [[]]) == []
