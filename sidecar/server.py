"""The sidecar component: HTTP ops endpoints, the StoreAPI over its Prometheus, the shipper
of Prometheus's blocks and the reloader, in the order and with the checks Thanos's has.

Start-up, as Thanos: with a bucket configured, Prometheus's flags are checked first
(min-block-duration must equal max-block-duration, or Prometheus would compact blocks the
shipper already sent); then external labels and the lowest timestamp are read, retried until
Prometheus answers; a Prometheus without external labels is refused (the process exits);
then the component is ready and the gRPC StoreAPI starts. The same reads repeat every
``get_config_interval_s`` as a heartbeat.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from common.ops import add_ops_routes, new_registry, start_site
from common.tasks import cancel_and_wait
from common.units import parse_duration_ms, parse_time_or_duration
from common.webconfig import WebConfigFile
from objstore import Bucket, bucket_from_config
from receiver.tsdb.block import _thanos_section
from shipper.shipper import Shipper, ShipperMetrics, ShipperOptions, block_dirs
from storeapi.server import serve as serve_storeapi

from .config import SidecarConfig
from .meta import PromMetadata
from .promclient import PrometheusClient, PrometheusError
from .promstore import PrometheusStore
from .reloader import Reloader, ReloaderMetrics

log = logging.getLogger(__name__)

NO_EXTERNAL_LABELS = ("no external labels configured on Prometheus server, uniquely identifying "
                      "external labels must be configured; see "
                      "https://thanos.io/tip/thanos/storage.md#external-labels for details.")
SHIPPER_INTERVAL_S = 30.0  # Thanos's fixed shipper period
BLOCK_POLL_S = 1.0  # new block directories are noticed this fast (a directory listing)


class SidecarFatal(RuntimeError):
    """A condition on which Thanos's sidecar exits."""


def check_block_durations(flags: dict[str, str] | None, ignore_unequal: bool) -> str | None:
    """Thanos's check of Prometheus's flags: an error text when min and max block durations
    differ (unless ignored); None when fine or when Prometheus has no flags API. Warns when
    the block duration is not 2h."""
    if flags is None:
        log.warning("failed to check Prometheus flags, due to potentially older Prometheus. "
                    "No extra validation is done.")
        return None
    lo = flags.get("storage.tsdb.min-block-duration", "")
    hi = flags.get("storage.tsdb.max-block-duration", "")
    try:
        lo_ms, hi_ms = parse_duration_ms(lo), parse_duration_ms(hi)
    except ValueError:
        return f"cannot parse Prometheus's block durations {lo!r} / {hi!r}"
    if lo_ms != hi_ms:
        if not ignore_unequal:
            return (f"found that TSDB Max time is {hi} and Min time is {lo}. Compaction needs to "
                    "be disabled (storage.tsdb.min-block-duration = "
                    "storage.tsdb.max-block-duration)")
        log.warning("flag to ignore Prometheus min/max block duration flags differing is being "
                    "used. If the upload of a 2h block fails and a Prometheus compaction "
                    "happens that block may be missing from your Thanos bucket storage.")
    if lo_ms != 2 * 3600 * 1000:
        log.warning("found that TSDB block time is not 2h. Only 2h block time is recommended.",
                    extra={"block-time": lo})
    return None


class Sidecar:
    def __init__(self, cfg: SidecarConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or new_registry()
        self.ports: dict[str, int] = {}
        self.ready = False
        self.client = PrometheusClient(cfg.prometheus_url, cfg.get_config_timeout_s)
        self.meta = PromMetadata(parse_time_or_duration(cfg.min_time))
        self.store = PrometheusStore(self.client, self.meta)
        self.shipper: Shipper | None = None
        self.failed: asyncio.Future[str] | None = None  # set with the reason on a fatal error
        self._bucket: Bucket | None = None
        self._runner: web.AppRunner | None = None
        self._grpc = None
        self._tasks: list[asyncio.Task[None]] = []
        self._prom_up = Gauge("thanos_sidecar_prometheus_up",
                              "Boolean indicator whether the sidecar can reach its Prometheus "
                              "peer.", registry=self.registry)
        self._heartbeat = Gauge("thanos_sidecar_last_heartbeat_success_time_seconds",
                                "Timestamp of the last successful heartbeat in seconds.",
                                registry=self.registry)
        self._shipper_metrics = ShipperMetrics(self.registry)
        self.reloader = Reloader(cfg.reloader, self.client, ReloaderMetrics(self.registry))

    @property
    def uploads(self) -> bool:
        return bool(self.cfg.objstore_config)

    async def start(self) -> None:
        self.failed = asyncio.get_running_loop().create_future()
        if self.uploads:
            self._bucket = bucket_from_config(self.cfg.objstore_config)
            wal = Path(self.cfg.tsdb_path) / "wal"
            if not wal.is_dir():  # as Thanos: said loudly, but not fatal
                log.error("WAL dir is not accessible. Is this dir a TSDB directory? If yes it "
                          "is shared with TSDB?", extra={"path": str(wal)})
        else:
            log.info("no supported bucket was configured, uploads will be disabled")
        if self.cfg.http_address:
            app = web.Application()
            add_ops_routes(app, self.registry, lambda: self.ready)
            self._runner, self.ports["http"] = await start_site(
                app, self.cfg.http_address,
                web_config=WebConfigFile(self.cfg.http_config) if self.cfg.http_config else None)
        self._spawn(self._main(), "sidecar-main")
        if self.cfg.reloader.enabled:
            self._spawn(self.reloader.run(), "sidecar-reloader")
        log.info("starting sidecar")

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        err = task.exception()
        if err is not None and self.failed is not None and not self.failed.done():
            log.error("sidecar stopped", extra={"err": str(err)})
            self.failed.set_result(str(err))

    async def _retry(self, what: str, attempt) -> None:
        """``attempt()`` until it succeeds, every get_config_interval (Thanos's runutil.Retry)."""
        while True:
            try:
                await asyncio.wait_for(attempt(), self.cfg.get_config_timeout_s)
                return
            except (PrometheusError, TimeoutError) as e:
                log.warning(f"{what}. Is Prometheus running? Retrying", extra={"err": str(e)})
                self._prom_up.set(0)
            await asyncio.sleep(self.cfg.get_config_interval_s)

    async def _validate(self) -> None:
        problem = check_block_durations(await self.client.flags(),
                                        self.cfg.ignore_unequal_block_size)
        if problem is not None:
            raise PrometheusError(problem)
        log.info("successfully validated prometheus flags")

    async def _initial(self) -> None:
        if self.uploads:
            await self._retry("failed to validate prometheus flags", self._validate)
        await self._retry("failed to fetch initial external labels",
                          lambda: self.meta.update(self.client))

    async def _main(self) -> None:
        if self.uploads:  # the shipper gives up after --prometheus.ready_timeout (as Thanos)
            try:
                await asyncio.wait_for(self._initial(), self.cfg.ready_timeout_s)
            except TimeoutError:
                raise SidecarFatal(
                    "aborting as no external labels found after waiting "
                    f"{self.cfg.ready_timeout_s:g}s") from None
        else:
            await self._initial()
        log.info("successfully loaded prometheus external labels",
                 extra={"external_labels": ",".join(f'{n}="{v}"' for n, v in self.meta.labels)})
        if not self.meta.labels:
            raise SidecarFatal(NO_EXTERNAL_LABELS)
        self._beat_ok()
        self._grpc, self.ports["grpc"] = await serve_storeapi(
            self.store, self.cfg.grpc_address, component_type="sidecar",
            tls=self.cfg.grpc_server_tls)
        if self.uploads:
            self._spawn(self._ship_loop(), "sidecar-shipper")
        while True:
            await asyncio.sleep(self.cfg.get_config_interval_s)
            try:
                await asyncio.wait_for(self.meta.update(self.client),
                                       self.cfg.get_config_timeout_s)
            except (PrometheusError, TimeoutError) as e:
                log.warning("heartbeat failed", extra={"err": str(e)})
                self._prom_up.set(0)
                self.ready = False
            else:
                self._beat_ok()

    def _beat_ok(self) -> None:
        self._prom_up.set(1)
        self._heartbeat.set(time.time())
        self.ready = True

    def thanos_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Prometheus's meta.json with the thanos section a sidecar adds (external labels,
        source "sidecar", the file list)."""
        block = Path(self.cfg.tsdb_path) / str(meta.get("ulid", ""))
        segments = sorted(p.name for p in (block / "chunks").iterdir())
        out = dict(meta)
        out["thanos"] = _thanos_section(
            {"labels": dict(self.meta.labels), "downsample": {"resolution": 0},
             "source": "sidecar"}, block, segments)
        return out

    async def _ship_loop(self) -> None:
        if not self.meta.labels:  # unreachable after _main's check; kept as Thanos's guard
            raise SidecarFatal("aborting as no external labels found")
        self.shipper = Shipper(
            self._bucket, Path(self.cfg.tsdb_path),  # type: ignore[arg-type]
            opts=ShipperOptions(meta_transform=self.thanos_meta,
                                upload_compacted=self.cfg.upload_compacted, skip_empty=True),
            metrics=self._shipper_metrics)
        loop = asyncio.get_running_loop()
        seen: set[str] | None = None
        last = float("-inf")
        while True:
            names = {b.name for b in block_dirs(Path(self.cfg.tsdb_path))}
            if names != seen or loop.time() - last >= SHIPPER_INTERVAL_S:
                try:
                    await self.shipper.sync()
                except Exception as e:  # noqa: BLE001 -- log and try again next round
                    log.warning("shipper sync failed", extra={"err": str(e)})
                seen, last = names, loop.time()
            await asyncio.sleep(BLOCK_POLL_S)

    async def stop(self) -> None:
        self.ready = False
        await cancel_and_wait(more=self._tasks)
        self._tasks.clear()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._bucket is not None:
            await self._bucket.close()
            self._bucket = None
        await self.client.close()


async def run_until_signal(sidecar: Sidecar) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a fatal condition (exit 1, as Thanos)."""
    import signal
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sidecar.start()
    assert sidecar.failed is not None
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({waiter, sidecar.failed},
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        await sidecar.stop()
    if sidecar.failed.done():
        log.error("sidecar failed", extra={"err": sidecar.failed.result()})
        return 1
    return 0
