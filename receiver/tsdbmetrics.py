"""Per-tenant TSDB metrics under Prometheus's names, labelled ``tenant`` as Thanos's multitsdb
does: head series and time bounds, series created/removed, WAL fsyncs, failed writes,
corruptions and the replay duration.

Read from the tenants' counters at scrape time (one pass over the tenants, none over series),
so appending pays nothing for them.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from .tsdb.head import NO_TIME_MAX, NO_TIME_MIN

if TYPE_CHECKING:
    from .multitsdb import MultiTSDB


class TSDBCollector(Collector):
    def __init__(self, db: "MultiTSDB") -> None:
        self.db = db

    def collect(self) -> Iterator:
        t = ["tenant"]
        series = GaugeMetricFamily("prometheus_tsdb_head_series", "Series in the head.", labels=t)
        min_time = GaugeMetricFamily("prometheus_tsdb_head_min_time",
                                     "Lowest timestamp in the head (ms).", labels=t)
        max_time = GaugeMetricFamily("prometheus_tsdb_head_max_time",
                                     "Highest timestamp in the head (ms).", labels=t)
        created = CounterMetricFamily("prometheus_tsdb_head_series_created",
                                      "Series created in the head.", labels=t)
        removed = CounterMetricFamily("prometheus_tsdb_head_series_removed",
                                      "Series removed from the head.", labels=t)
        fsync = SummaryMetricFamily("prometheus_tsdb_wal_fsync_duration_seconds",
                                    "Duration of WAL fsyncs (group commits).", labels=t)
        writes = CounterMetricFamily("prometheus_tsdb_wal_record_part_writes",
                                     "WAL records written.", labels=t)
        written = CounterMetricFamily("prometheus_tsdb_wal_record_parts_bytes_written",
                                      "Bytes of WAL records written, headers and CRCs included.",
                                      labels=t)
        failed = CounterMetricFamily("prometheus_tsdb_wal_writes_failed",
                                     "WAL writes and fsyncs that failed.", labels=t)
        corrupt = CounterMetricFamily("prometheus_tsdb_wal_corruptions",
                                      "WAL corruptions found: segments skipped by the last "
                                      "replay and torn tails cut.", labels=t)
        segment = GaugeMetricFamily("prometheus_tsdb_wal_segment_current",
                                    "WAL segment index being written.", labels=t)
        replay = GaugeMetricFamily("prometheus_tsdb_data_replay_duration_seconds",
                                   "Time the WAL replay at start took.", labels=t)
        for name, tsdb in list(self.db.tenants.items()):
            head, wal, v = tsdb.head, tsdb.wal, [name]
            series.add_metric(v, head.num_series)
            if head.min_time != NO_TIME_MIN and head.max_time != NO_TIME_MAX:
                min_time.add_metric(v, head.min_time)
                max_time.add_metric(v, head.max_time)
            created.add_metric(v, head.series_created)
            removed.add_metric(v, head.series_removed)
            fsync.add_metric(v, count_value=wal.fsyncs, sum_value=wal.fsync_seconds)
            writes.add_metric(v, wal.records_written)
            written.add_metric(v, wal.bytes_written)
            failed.add_metric(v, wal.writes_failed)
            corrupt.add_metric(v, tsdb.replay_stats.corrupt_segments + wal.repairs)
            segment.add_metric(v, wal.current_segment)
            replay.add_metric(v, tsdb.replay_seconds)
        yield from (series, min_time, max_time, created, removed, fsync, writes, written, failed,
                    corrupt, segment, replay)


def registry_add_tsdb_metrics(registry, db: "MultiTSDB") -> None:
    registry.register(TSDBCollector(db))
