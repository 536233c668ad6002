"""The bytes Thanos's store gateway (v0.42) reserves against ``--store.grpc.downloaded-bytes-limit``
for a block's series entries and chunks, so that a refusal names the same running total
("limit L violated (got N)") at the same step as Thanos's.

Thanos does not count the bytes it actually reads but its read plan, made before reading:
the matched series are taken in batches of 10000 postings; per batch it reserves each
gap-merged range of series entries, every entry assumed to span the block's estimated series
size (unclamped), then, per segment file, the gap-merged ranges of the batch's chunks in
range, each chunk assumed to span the estimated chunk size. The estimates are the block's
``index_stats`` (``series_max_size``, ``chunk_max_size``) when smaller than Thanos's defaults
(64 KiB, 16000 B). Our own reads use their own estimates; only the accounting follows Thanos.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SERIES_ESTIMATE = 64 << 10   # Thanos's store.EstimatedMaxSeriesSize
CHUNK_ESTIMATE = 16000       # store.EstimatedMaxChunkSize
PARTITION_GAP = 512 << 10    # store.PartitionerMaxGapSize
SERIES_BATCH = 10000         # store.SeriesBatchSize
SERIES_ALIGN = 16            # index v2: a series ref is its entry's offset / 16


@dataclass(frozen=True)
class Estimates:
    """The per-block sizes Thanos's store assumes for one series entry and one chunk."""
    series: int = SERIES_ESTIMATE
    chunk: int = CHUNK_ESTIMATE

    @classmethod
    def of_block(cls, thanos_meta: dict[str, Any] | None) -> "Estimates":
        """Thanos's store: a positive ``index_stats`` size below the default replaces it."""
        stats = (thanos_meta or {}).get("index_stats") or {}

        def pick(key: str, default: int) -> int:
            v = stats.get(key)
            return int(v) if isinstance(v, int) and 0 < v < default else default
        return cls(pick("series_max_size", SERIES_ESTIMATE), pick("chunk_max_size", CHUNK_ESTIMATE))


def partitions(starts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Thanos's gap-based partitioner over items at sorted ``starts``, each assumed ``size``
    bytes long (items within PARTITION_GAP of the range so far join it): each range's bytes
    and the index of its last item."""
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    breaks = np.flatnonzero(np.diff(starts) > size + PARTITION_GAP)
    first = np.concatenate(([0], breaks + 1))
    last = np.concatenate((breaks, [len(starts) - 1]))
    return starts[last] - starts[first] + size, last


@dataclass
class SeriesPlan:
    """Thanos's reads of a block's matched series entries: per batch, per range, the bytes
    reserved and the index (into the refs) of the range's last series, the one entry Thanos
    fetches again when it is longer than the estimate."""
    est: Estimates
    bytes: list[np.ndarray]
    lasts: list[np.ndarray]

    @classmethod
    def of(cls, refs: np.ndarray, est: Estimates) -> "SeriesPlan":
        offsets = np.asarray(refs, dtype=np.int64) * SERIES_ALIGN
        sizes, lasts = [], []
        for i in range(0, max(len(offsets), 1), SERIES_BATCH):
            b, last = partitions(offsets[i:i + SERIES_BATCH], est.series)
            sizes.append(b)
            lasts.append(last + i)
        return cls(est, sizes, lasts)

    @property
    def first(self) -> int:
        """The first reservation, made before any entry is read."""
        return int(self.bytes[0][0]) if len(self.bytes[0]) else 0

    def last_refs(self) -> np.ndarray:
        return np.concatenate(self.lasts)

    def reservations(self, last_lengths: np.ndarray, chunk_totals: list[list[int]]
                     ) -> list[tuple[str, int]]:
        """Every reservation after the first, in Thanos's order: per batch its series ranges
        (each followed by the refetch of its last entry, ``last_lengths`` being those
        entries' lengths without CRC in last_refs() order), then its chunks per segment."""
        out: list[tuple[str, int]] = []
        at = 0
        for k, sizes in enumerate(self.bytes):
            for nb in sizes.tolist():
                out.append(("series", nb))
                length = int(last_lengths[at])
                at += 1
                if length > self.est.series:
                    out.append(("series", length + 1))
            out += [("chunks", c) for c in (chunk_totals[k] if k < len(chunk_totals) else ())]
        return out[1:] if len(self.bytes[0]) else out


def chunk_reservations(c_refs, bounds, est: Estimates) -> list[list[int]]:
    """Bytes reserved for the chunks of each batch of series, one figure per segment file
    (in segment order): ``c_refs`` are the chunks in range, ``bounds`` their running totals
    series by series (n + 1)."""
    refs = np.asarray(c_refs, dtype=np.int64)
    n = len(bounds) - 1
    out = []
    for i in range(0, max(n, 1), SERIES_BATCH):
        batch = refs[bounds[i]:bounds[min(i + SERIES_BATCH, n)]]
        seqs = batch >> 32
        out.append([int(partitions(np.sort(batch[seqs == seq] & 0xFFFFFFFF), est.chunk)[0].sum())
                    for seq in np.unique(seqs).tolist()])
    return out


def chunk_refetches(data_lengths: np.ndarray, est: Estimates) -> list[int]:
    """Thanos fetches again each chunk longer than the estimate (length uvarint, encoding
    byte and data) and reserves its length: in chunk order, those lengths."""
    lengths = np.asarray(data_lengths, dtype=np.int64)
    total = lengths + 2 + (lengths >= 1 << 7) + (lengths >= 1 << 14) + (lengths >= 1 << 21)
    return total[total > est.chunk].tolist()
