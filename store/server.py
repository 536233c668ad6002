"""``promring store``: the store gateway -- blocks in object storage served over the StoreAPI.

Mirrors Thanos's store gateway: the bucket is synced before the component reports ready and
then every ``sync_interval_s``; per block only a small index-header lives on local disk, and
postings, series and chunks are read by range on demand through a bounded LRU.
"""
from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from common.ops import add_ops_routes, new_registry, start_site
from common.tls import ServerTLS
from common.webconfig import WebConfigFile
from objstore import Bucket, bucket_from_config
from objstore.metrics import instrumented
from receiver.tsdb.relabel import parse_relabel_configs
from storeapi.server import serve as serve_storeapi

from .block import (
    CHUNK_SIZE_ESTIMATE,
    DEFAULT_MAX_GAP,
    DEFAULT_MAX_RANGE,
    SERIES_SIZE_ESTIMATE,
    FetchOptions,
)
from .bucketstore import BucketStore
from .cache import (
    CacheMetrics,
    IndexCacheConfig,
    LRUCache,
    RemoteIndexCache,
    new_bytes_cache,
    parse_index_cache_config,
)
from .cachingbucket import CachingBucket, parse_caching_bucket_config
from .limits import SeriesGate, StoreLimits, StoreLimitsConfig
from .metafilter import BlockFilters
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class StoreConfig:
    data_dir: Path
    objstore_config: str  # bucket YAML, as Thanos's --objstore.config
    grpc_address: str = "0.0.0.0:10901"
    http_address: str = "0.0.0.0:10902"
    sync_interval_s: float = 180.0  # Thanos --sync-block-duration=3m
    cache_bytes: int = 256 << 20  # postings + series + chunks
    block_sync_concurrency: int = 20
    fetch_concurrency: int = 32  # ranged reads in flight
    max_gap_bytes: int = DEFAULT_MAX_GAP  # merge ranged reads closer than this
    max_range_bytes: int = DEFAULT_MAX_RANGE  # ...but split merged reads bigger than this
    series_size_estimate: int = SERIES_SIZE_ESTIMATE
    chunk_size_estimate: int = CHUNK_SIZE_ESTIMATE
    # Thanos's --consistency-delay (0s), --ignore-deletion-marks-delay (24h) and
    # --selector.relabel-config YAML ("" = every block): store.metafilter
    consistency_delay_s: float = 0.0
    ignore_deletion_marks_delay_s: float = 24 * 3600.0
    selector_relabel_config: str = ""
    # Read each new block's whole index once in the background and check every checksum
    # and bound (a marker in data_dir remembers blocks that passed).
    verify_index: bool = True
    # Thanos's --index-cache.config / --store.caching-bucket.config YAML ("" = none): IN-MEMORY
    # sizes the in-process LRU; MEMCACHED adds a shared cache behind it.
    index_cache_config: str = ""
    caching_bucket_config: str = ""
    grpc_server_tls: ServerTLS | None = None  # --grpc-server-tls-*
    http_config: str = ""                     # --http.config
    # --store.limits.request-*, --store.grpc.series-max-concurrency, --min-time/--max-time
    limits: StoreLimitsConfig = field(default_factory=StoreLimitsConfig)


def raise_open_files_limit() -> None:
    """Every loaded block keeps its index-header mmapped, and Python's mmap holds a descriptor
    per mapping: lift the soft open-files limit to the hard one (as Go programs such as Thanos
    do at start), so a bucket of thousands of blocks does not run out."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the open files limit", extra={"err": repr(e)})


class StoreGateway:
    """HTTP ops endpoints, the StoreAPI over a BucketStore, and the periodic bucket sync."""

    FREEZE_HEAP_AFTER_START = True  # the CLI freezes start-up objects (common.gcheap)

    def __init__(self, cfg: StoreConfig, registry: CollectorRegistry | None = None,
                 bucket: Bucket | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or new_registry()
        self.ready = False
        self._synced = False  # a first bucket sync has completed
        self.ports: dict[str, int] = {}
        self._bucket = bucket
        self._own_bucket = bucket is None
        # Config errors surface here, before anything starts (the CLI turns them into exit 1).
        self.index_cache_cfg: IndexCacheConfig | None = (
            parse_index_cache_config(cfg.index_cache_config) if cfg.index_cache_config.strip()
            else None)
        self.caching_bucket_cfg = (parse_caching_bucket_config(cfg.caching_bucket_config)
                                   if cfg.caching_bucket_config.strip() else None)
        self.filters = BlockFilters(cfg.consistency_delay_s, cfg.ignore_deletion_marks_delay_s,
                                    tuple(parse_relabel_configs(
                                        cfg.selector_relabel_config, "--selector.relabel-config",
                                        allow_empty=True)))
        lru_bytes = cfg.cache_bytes
        if self.index_cache_cfg is not None and self.index_cache_cfg.backend.type == "IN-MEMORY":
            lru_bytes = self.index_cache_cfg.backend.max_size
        self.cache = LRUCache(lru_bytes, CacheMetrics(self.registry))
        self.remote_cache: RemoteIndexCache | None = None
        self._read_bucket: Bucket | None = None
        self.store: BucketStore | None = None
        self._runner: web.AppRunner | None = None
        self._grpc = None
        self._sync_task: asyncio.Task[None] | None = None
        self.limits = StoreLimits(cfg.limits, self.registry)  # a bad --min-time fails here
        self._gate = SeriesGate(cfg.limits.series_max_concurrency, self.registry)

    async def start(self) -> None:
        cfg = self.cfg
        if self._bucket is None:
            self._bucket = instrumented(bucket_from_config(cfg.objstore_config), self.registry)
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
        raise_open_files_limit()
        bucket = self._bucket  # instrumented above when opened here; a caller's is the caller's
        if self.caching_bucket_cfg is not None:
            bucket = CachingBucket(bucket, new_bytes_cache(self.caching_bucket_cfg.backend,
                                                           self.registry, "caching-bucket"),
                                   self.caching_bucket_cfg, self.registry)
        self._read_bucket = bucket
        icfg = self.index_cache_cfg
        if icfg is not None and icfg.backend.type == "MEMCACHED":
            self.remote_cache = RemoteIndexCache(
                new_bytes_cache(icfg.backend, self.registry, "index-cache"), icfg)
        self.store = BucketStore(
            bucket, Path(cfg.data_dir), self.cache, self.registry,
            opts=FetchOptions(cfg.max_gap_bytes, cfg.series_size_estimate,
                              cfg.chunk_size_estimate, cfg.max_range_bytes),
            sync_concurrency=cfg.block_sync_concurrency,
            fetch_concurrency=cfg.fetch_concurrency,
            filters=self.filters,
            verify_index=cfg.verify_index, remote_cache=self.remote_cache,
            limits=self.limits)
        if cfg.http_address:
            app = web.Application()
            add_ops_routes(app, self.registry, lambda: self.ready)
            self._runner, self.ports["http"] = await start_site(
                app, cfg.http_address,
                web_config=WebConfigFile(cfg.http_config) if cfg.http_config else None)
        # Ready only after a first complete sync (as Thanos); if the bucket is unreachable the
        # component still starts, reports not-ready, and the sync loop keeps retrying.
        await self._sync_logged()
        self._grpc, self.ports["grpc"] = await serve_storeapi(self.store, cfg.grpc_address,
                                                              component_type="store",
                                                              tls=cfg.grpc_server_tls,
                                                              registry=self.registry,
                                                              series_gate=self._gate)
        self.ready = self._synced  # ready only once the StoreAPI it reports on is listening
        self._sync_task = asyncio.create_task(self._sync_loop(), name="store-sync")

    async def sync_once(self) -> None:
        """One bucket sync now (tests call this instead of waiting for the interval)."""
        assert self.store is not None, "start() first"
        await self.store.sync_once()
        self._synced = True
        self.ready = self._grpc is not None

    async def _sync_logged(self) -> bool:
        try:
            await self.sync_once()
            return True
        except Exception as e:  # noqa: BLE001 -- keep serving what we have; retry later
            log.error("bucket sync failed", extra={"err": repr(e)})
            return False

    async def _sync_loop(self) -> None:
        # Until the first sync succeeds, retry sooner than the full interval.
        while True:
            delay = self.cfg.sync_interval_s if self.ready else min(5.0, self.cfg.sync_interval_s)
            await asyncio.sleep(delay)
            await self._sync_logged()

    async def stop(self) -> None:
        self.ready = False
        await cancel_and_wait(self._sync_task)
        self._sync_task = None
        if self.store is not None:
            await self.store.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.remote_cache is not None:
            await self.remote_cache.cache.close()
            self.remote_cache = None
        if isinstance(self._read_bucket, CachingBucket):
            await self._read_bucket.cache.close()
        self._read_bucket = None
        if self._own_bucket and self._bucket is not None:
            await self._bucket.close()
            self._bucket = None
