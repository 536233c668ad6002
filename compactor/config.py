"""``promring compact`` configuration and its Thanos-spelled command-line flags."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from common.units import parse_duration_ms
from objstore.flags import add_objstore_flags, add_path_or_content, objstore_yaml, path_or_content
from receiver.tsdb.relabel import RelabelConfig, parse_relabel_configs

from .planner import DEFAULT_RANGES


@dataclass
class CompactConfig:
    data_dir: Path
    objstore_config: str  # bucket YAML text, as Thanos's --objstore.config
    wait: bool = False  # keep running, one pass every wait_interval_s
    wait_interval_s: float = 300.0
    delete_delay_s: float = 48 * 3600.0  # deletion-marked blocks live this long
    retention_raw_ms: int = 0  # 0 = keep forever
    retention_5m_ms: int = 0
    retention_1h_ms: int = 0
    downsampling_disable: bool = False
    dedup_replica_labels: list[str] = field(default_factory=list)
    concurrency: int = 1  # groups compacted in parallel
    http_address: str = ""  # "" = no HTTP server
    http_config: str = ""   # --http.config: Prometheus web config (TLS, basic auth, headers)
    block_viewer_sync_s: float = 60.0  # the HTTP port's bucket UI lists the bucket this often
    bucket_web_label: str = ""  # external label whose value names the bucket UI's groups
    # Thanos defaults below; tests shorten the delays.
    consistency_delay_s: float = 30 * 60.0  # ignore blocks younger than this (upload races)
    partial_upload_age_s: float = 48 * 3600.0  # delete meta-less uploads older than this
    enable_vertical_compaction: bool = True  # False: overlapping blocks halt their group
    block_ranges_ms: tuple[int, ...] = DEFAULT_RANGES
    sync_concurrency: int = 20
    # --selector.relabel-config: only the blocks these rules keep (by external labels and
    # __block_id) are compacted, downsampled, kept by retention and cleaned (sharding)
    selector: tuple[RelabelConfig, ...] = ()


def add_compact_flags(p: argparse.ArgumentParser) -> None:
    """Thanos's ``thanos compact`` flags (the subset promring implements)."""
    p.add_argument("--data-dir", default="./data", help="Scratch space for compaction.")
    add_objstore_flags(p, required=True)
    p.add_argument("--wait", action="store_true", help="Keep running instead of one pass.")
    p.add_argument("--wait-interval", dest="wait_interval", default="5m")
    p.add_argument("--delete-delay", dest="delete_delay", default="48h")
    p.add_argument("--consistency-delay", dest="consistency_delay", default="30m")
    p.add_argument("--retention.resolution-raw", dest="retention_raw", default="0d")
    p.add_argument("--retention.resolution-5m", dest="retention_5m", default="0d")
    p.add_argument("--retention.resolution-1h", dest="retention_1h", default="0d")
    p.add_argument("--downsampling.disable", dest="downsampling_disable", action="store_true")
    p.add_argument("--deduplication.replica-label", dest="replica_labels", action="append",
                   default=[], help="External label removed for offline dedup (repeatable).")
    p.add_argument("--compact.concurrency", dest="compact_concurrency", type=int, default=1)
    p.add_argument("--compact.enable-vertical-compaction", dest="vertical",
                   action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--http-address", dest="http_address", default="0.0.0.0:10902")
    p.add_argument("--http.config", dest="http_config", default="",
                   help="Prometheus web config file (TLS, basic auth, headers) for the HTTP server.")
    p.add_argument("--block-viewer.global.sync-block-interval", dest="block_viewer_sync",
                   default="1m", help="How often the bucket UI on --http-address lists the bucket.")
    p.add_argument("--bucket-web-label", dest="bucket_web_label", default="",
                   help="External label whose value names the bucket UI's groups.")
    add_path_or_content(p, "selector.relabel-config", "relabel configs (keep, drop, hashmod) "
                        "over each block's external labels and __block_id selecting the "
                        "blocks this compactor acts on")
    p.add_argument("--compact.partial-upload-age", dest="partial_upload_age", default="48h",
                   help="Delete block directories without meta.json older than this "
                        "(Thanos hard-codes 2d).")


def cli_config(a: argparse.Namespace) -> CompactConfig:
    """The config from parsed flags (see add_compact_flags); missing attributes default."""
    def dur_s(name: str, default: str) -> float:
        return parse_duration_ms(str(getattr(a, name, None) or default)) / 1000.0

    def dur_ms(name: str) -> int:
        return parse_duration_ms(str(getattr(a, name, None) or "0s"))

    viewer_sync_s = dur_s("block_viewer_sync", "1m")
    if viewer_sync_s <= 0:
        raise ValueError("--block-viewer.global.sync-block-interval must be greater than 0")
    return CompactConfig(
        data_dir=Path(getattr(a, "data_dir", None) or "./data"),
        objstore_config=objstore_yaml(a) or "",
        wait=bool(getattr(a, "wait", False)),
        wait_interval_s=dur_s("wait_interval", "5m"),
        delete_delay_s=dur_s("delete_delay", "48h"),
        consistency_delay_s=dur_s("consistency_delay", "30m"),
        retention_raw_ms=dur_ms("retention_raw"),
        retention_5m_ms=dur_ms("retention_5m"),
        retention_1h_ms=dur_ms("retention_1h"),
        downsampling_disable=bool(getattr(a, "downsampling_disable", False)),
        dedup_replica_labels=list(getattr(a, "replica_labels", None) or []),
        concurrency=max(1, int(getattr(a, "compact_concurrency", 1) or 1)),
        http_address=str(getattr(a, "http_address", "") or ""),
        http_config=str(getattr(a, "http_config", "") or ""),
        block_viewer_sync_s=viewer_sync_s,
        bucket_web_label=str(getattr(a, "bucket_web_label", "") or ""),
        enable_vertical_compaction=bool(getattr(a, "vertical", True)),
        partial_upload_age_s=dur_s("partial_upload_age", "48h"),
        selector=tuple(parse_relabel_configs(
            path_or_content(a, "selector.relabel-config"), "--selector.relabel-config",
            allow_empty=True)) if hasattr(a, "selector_relabel_config") else (),
    )
