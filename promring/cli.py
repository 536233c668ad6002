"""The ``promring`` command: one binary, Thanos-style subcommands and flag names."""
from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import re
import signal
import sys
from pathlib import Path

from common import aio
from common.gcheap import freeze_startup_heap, keep_freed_memory, trim_when_idle
from common.logs import setup_logging
from common.tasks import cancel_and_wait
from common.tls import (add_client_tls_flags, add_server_tls_flags, client_tls_from_flags,
                        server_tls_from_flags)
from common.rlimits import raise_open_files_limit
from common.units import parse_base2_bytes, parse_bytes, parse_duration_ms, parse_label_flag
from objstore.flags import add_objstore_flags, add_path_or_content, objstore_yaml, path_or_content

log = logging.getLogger("promring")


def _version() -> str:
    """Thanos-style ``--version`` text (prometheus/common version.Print layout)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version
    try:
        v = version("promring")
    except PackageNotFoundError:
        v = "unknown"
    return (f"promring, version {v}\n  python version: {platform.python_version()}\n"
            f"  platform: {sys.platform}/{platform.machine()}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every flag's default, also for flags without a help text; keeps line breaks."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        if action.option_strings and action.default in (None, "", []):
            action = copy.copy(action)
            action.default = "none"  # not "None", "" or "[]"
        return super()._format_action(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command: exact flag names only (no prefix matching, so ``--end`` is not
    ``--endpoint``), defaults shown in ``--help``, and ``--version`` -- as Thanos's kingpin."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=_version(),
                          help="Show application version.")

    def add_argument(self, *args, **kwargs):
        """A flag declared without help gets promring.flaghelp's text for it."""
        if not kwargs.get("help") and args and str(args[0]).startswith("--"):
            from promring.flaghelp import help_for
            kwargs["help"] = help_for(self.prog.split()[-1], args[0]) or kwargs.get("help")
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        """A usage mistake is one line (kingpin style), not the whole usage text."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log.level", dest="log_level", default="info",
                   choices=["debug", "info", "warn", "error"])
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])


def _receive_flags(p: argparse.ArgumentParser, *, up: bool) -> None:
    p.add_argument("--remote-write.address", dest="remote_write_address", default="0.0.0.0:19291",
                   help="Address for the remote-write endpoint (POST /api/v1/receive).")
    p.add_argument("--label", dest="labels", action="append", default=[],
                   help='External label added to every series, as name="value" (repeatable).')
    p.add_argument("--receive.tenant-header", dest="tenant_header", default="THANOS-TENANT")
    p.add_argument("--receive.default-tenant-id", dest="default_tenant", default="default-tenant")
    p.add_argument("--receive.tenant-label-name", dest="tenant_label_name", default="tenant_id")
    p.add_argument("--receive.max-request-size", dest="max_request_size", default="32MiB",
                   help="Largest remote-write body accepted; larger ones get 413.")
    p.add_argument("--tsdb.wal-fsync", dest="wal_fsync", default="none", choices=["none", "batch"],
                   help="none: acknowledge once the WAL write reached the OS (survives a process "
                        "crash); batch: also fsync, shared by concurrent requests (survives power loss).")
    p.add_argument("--tsdb.wal-compression", dest="wal_compression", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="Compress the tsdb WAL (snappy per record; --no-tsdb.wal-compression "
                        "to turn off). WALs written either way replay.")
    p.add_argument("--tsdb.min-block-duration", dest="min_block_duration", default="2h",
                   help="Block length the head is cut into (Thanos: equal to max).")
    p.add_argument("--tsdb.max-block-duration", dest="max_block_duration", default="2h")
    p.add_argument("--tsdb.too-far-in-future.time-window", dest="too_far_in_future",
                   default="10m",
                   help="Samples later than now + this are refused (409 out of bounds); 0s = off. "
                        "Thanos defaults to 0s; 10m (Prometheus's own limit for remote write) "
                        "keeps one bad clock from locking a tenant out.")
    p.add_argument("--tsdb.max-exemplars", dest="max_exemplars", type=int, default=0,
                   help="Exemplars kept per tenant from remote write (a ring: the oldest goes "
                        "when full); 0 or less: exemplars are not stored (Thanos's default).")
    p.add_argument("--tsdb.out-of-order.time-window", dest="ooo_time_window", default="0s",
                   help="Accept samples older than a series' newest (out of order) when "
                        "within this of the tenant's newest sample, as Prometheus's "
                        "out_of_order_time_window; 0s = refuse them (409).")
    p.add_argument("--tsdb.out-of-order.cap-max", dest="ooo_cap_max", type=int, default=0,
                   help="Accepted for Thanos compatibility; no effect (the out-of-order head "
                        "keeps sorted columns, not capped chunks).")
    p.add_argument("--tsdb.retention", dest="tsdb_retention", default="15d",
                   help="How long shipped blocks stay on local disk.")
    add_objstore_flags(p, required=False)  # blocks are shipped to the bucket when given
    add_server_tls_flags(p, "remote-write.server")
    p.add_argument("--receive.tenant-certificate-field", dest="tenant_certificate_field",
                   default="", choices=["", "organization", "organizationalUnit", "commonName"],
                   help="Take the tenant from this field of the verified client certificate "
                        "(needs --remote-write.server-tls-client-ca); the tenant header is ignored.")
    _http_config_flag(p)
    p.add_argument("--receive.rejected-log-interval", dest="rejected_log_interval", default="30s",
                   help="How often rejected writes are summed up in one log line per tenant "
                        "and reason; 0 disables.")
    p.add_argument("--receive.limits-config-file", dest="limits_file", default=None,
                   help="Thanos limits YAML (request size/series/samples -> 413, head series -> 429); "
                        "re-read when it changes.")


def _http_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http.config", dest="http_config", default="",
                   help="Prometheus web config file (TLS, basic auth, headers) for the HTTP "
                        "servers; re-read when it changes.")


def _routing_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--receive.hashrings-file", dest="hashrings_file", default=None,
                   help="Thanos hashrings JSON; makes this receiver a router (re-read when it changes).")
    p.add_argument("--receive.hashrings", dest="hashrings_content", default=None,
                   help="Alternative to --receive.hashrings-file (lower priority): the JSON itself.")
    p.add_argument("--receive.hashrings-algorithm", dest="hashrings_algorithm", default="hashmod",
                   choices=["hashmod", "ketama"])
    p.add_argument("--receive.hashrings-file-refresh-interval", dest="hashrings_refresh",
                   default="5m", help="Full re-read interval of the hashrings and limits files "
                                      "(changes are picked up within a second anyway).")
    p.add_argument("--receive.replication-factor", dest="replication_factor", type=int, default=1)
    p.add_argument("--receive.replica-header", dest="replica_header", default="THANOS-REPLICA",
                   help="HTTP header carrying the replica number of an already replicated write.")
    p.add_argument("--receive.local-endpoint", dest="local_endpoint", default="",
                   help="This receiver's address in the hashring: router+ingestor mode.")
    p.add_argument("--receive-forward-timeout", dest="forward_timeout", default="5s",
                   help="Timeout of one forwarded write to an ingestor.")
    p.add_argument("--receive.grpc-compression", dest="grpc_compression", default="snappy",
                   choices=["snappy", "none"], help="Compression of forwarded writes (gRPC).")
    p.add_argument("--receive.replication-protocol", dest="replication_protocol",
                   default="protobuf", choices=["protobuf", "capnproto"],
                   help="Protocol of forwarded writes: protobuf (gRPC) or capnproto (to each "
                        "endpoint's capnproto_address).")
    add_client_tls_flags(p, "remote-write.client")


def _query_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query.lookback-delta", dest="lookback_delta", default="5m")
    p.add_argument("--query.timeout", dest="query_timeout", default="2m")
    p.add_argument("--query.max-concurrent", dest="max_concurrent", type=int, default=20)
    p.add_argument("--query.max-samples", dest="max_samples", type=int, default=50_000_000)
    p.add_argument("--query.log-queries-longer-than", dest="slow_query", default="10s",
                   help="Log queries slower than this (one line each, with the query); 0 "
                        "disables, a negative value logs every query.")
    p.add_argument("--enable-feature", dest="enable_feature", action="append", default=[],
                   help="Prometheus's PromQL feature flags, comma-separated or repeated: "
                        "promql-delayed-name-removal, promql-experimental-functions, "
                        "promql-extended-range-selectors, promql-binop-fill-modifiers, "
                        "type-and-unit-labels, use-start-timestamps. Default: none (as Prometheus "
                        "3.14).")
    p.add_argument("--query.auto-downsampling", dest="auto_downsampling", default=False,
                   action=argparse.BooleanOptionalAction,
                   help="Read downsampled data when a query's step allows (max_source_resolution=auto).")
    p.add_argument("--query.replica-label", dest="replica_labels", action="append", default=[],
                   help="Label naming a replica; series differing only in it are deduplicated "
                        "(repeatable).")
    p.add_argument("--deduplication.func", dest="dedup_func", default="penalty",
                   choices=["penalty", "chain"],
                   help="penalty: Thanos's algorithm for HA Prometheus pairs; chain: union of "
                        "identical replicas (receive replication).")
    p.add_argument("--query.partial-response", dest="partial_response", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="Answer from the endpoints that work, with warnings naming the failed ones "
                        "(default of partial_response; disable with --no-query.partial-response).")
    p.add_argument("--query.tenant-header", dest="query_tenant_header", default="THANOS-TENANT")
    p.add_argument("--query.default-tenant-id", dest="query_default_tenant", default="default-tenant")
    p.add_argument("--query.tenant-label-name", dest="query_tenant_label", default="tenant_id")
    p.add_argument("--query.tenant-certificate-field", dest="query_tenant_certificate_field",
                   default="", choices=["", "organization", "organizationalUnit", "commonName"],
                   help="Take a query's tenant from this field of the verified client certificate "
                        "(needs client certificates in --http.config); the tenant headers are ignored.")
    p.add_argument("--query.enforce-tenancy", dest="enforce_tenancy", default=False,
                   action=argparse.BooleanOptionalAction,
                   help="A query sees only series of the tenant in its tenant header.")
    p.add_argument("--web.cors.origin", dest="cors_origin", default=".*",
                   help="Regex of the origins browsers may call the query API from (CORS).")


def _query_endpoint_flags(p: argparse.ArgumentParser) -> None:
    """The querier's endpoint discovery, timeouts, web prefixes and StoreAPI server."""
    p.add_argument("--endpoint-strict", dest="strict_endpoints", action="append", default=[],
                   help="StoreAPI address always used, even while its health check fails "
                        "(repeatable).")
    p.add_argument("--store.sd-files", "--endpoint.sd-files", dest="sd_files", action="append",
                   default=[], help="File SD files (Prometheus file_sd format: a YAML/JSON list "
                                    "of {targets: [...]}) naming StoreAPI addresses; globs allowed "
                                    "(repeatable). Re-read when they change.")
    p.add_argument("--store.sd-interval", dest="sd_interval", default="5m",
                   help="Full re-read interval of the file SD files (changes apply sooner).")
    p.add_argument("--endpoint.sd-config-file", dest="endpoint_sd_config_file", default="",
                   help="Thanos's endpoint config YAML (endpoints: [{address, strict, group}]), "
                        "re-read when it changes.")
    p.add_argument("--endpoint.sd-config", dest="endpoint_sd_config", default="",
                   help="Alternative to --endpoint.sd-config-file: the YAML itself.")
    p.add_argument("--endpoint.sd-config-reload-interval", dest="endpoint_sd_config_interval",
                   default="5m", help="Full re-read interval of the endpoint config file.")
    p.add_argument("--store.response-timeout", dest="store_response_timeout", default="0ms",
                   help="A store not answering within this is dropped from the query (a partial "
                        "response when allowed). 0 disables.")
    p.add_argument("--web.external-prefix", dest="web_external_prefix", default="",
                   help="Static prefix of links and redirects (e.g. behind a reverse proxy).")
    p.add_argument("--web.route-prefix", dest="web_route_prefix", default="",
                   help="Prefix under which the HTTP API is served; defaults to "
                        "--web.external-prefix.")
    p.add_argument("--grpc-address", dest="grpc_address", default="0.0.0.0:10901",
                   help="StoreAPI over this querier's endpoints, so queriers can be stacked; "
                        "empty disables.")


def _rule_flags(p: argparse.ArgumentParser) -> None:
    """``thanos rule``'s flags (names and defaults)."""
    p.add_argument("--rule-file", dest="rule_files", action="append", default=None,
                   help="Rule file (glob allowed, repeatable); re-read when it changes and on "
                        "POST /-/reload. (default: rules/)")
    p.add_argument("--eval-interval", dest="eval_interval", default="1m",
                   help="Evaluation interval of groups without their own interval.")
    p.add_argument("--query", dest="queries", action="append", default=[],
                   help="Querier HTTP address (host:port or URL) the rules are evaluated by "
                        "(repeatable).")
    p.add_argument("--query.sd-files", dest="query_sd_files", action="append", default=[],
                   help="File SD files (glob allowed) naming querier HTTP addresses (repeatable).")
    p.add_argument("--query.sd-interval", dest="query_sd_interval", default="5m",
                   help="Full re-read interval of the file SD files (changes apply sooner).")
    p.add_argument("--query.http-method", dest="query_http_method", default="POST",
                   choices=["GET", "POST"])
    p.add_argument("--label", dest="labels", action="append", default=[],
                   help='External label of every result (and of the blocks), as name="value" '
                        "(repeatable).")
    p.add_argument("--data-dir", dest="data_dir", default="data/",
                   help="The ruler's TSDB (stateful mode).")
    add_objstore_flags(p, required=False)  # stateful: blocks shipped to the bucket
    p.add_argument("--remote-write.config-file", dest="remote_write_config_file", default=None,
                   help="Prometheus remote_write YAML; switches to stateless mode (results "
                        "remote-written, no TSDB).")
    p.add_argument("--remote-write.config", dest="remote_write_config", default=None,
                   help="Alternative to --remote-write.config-file: the YAML itself.")
    p.add_argument("--alertmanagers.url", dest="alertmanager_urls", action="append", default=[],
                   help="Alertmanager URL alerts are sent to (v2 API; repeatable).")
    p.add_argument("--alertmanagers.send-timeout", dest="alertmanager_timeout", default="10s")
    p.add_argument("--alert.query-url", dest="alert_query_url", default="",
                   help="Query UI URL put in every alert's generatorURL.")
    p.add_argument("--alert.label-drop", dest="alert_label_drop", action="append", default=[],
                   help="Label dropped from alerts before they are sent (repeatable).")
    p.add_argument("--for-grace-period", dest="for_grace_period", default="10m",
                   help="Least time between a restart and a restored alert firing.")
    p.add_argument("--for-outage-tolerance", dest="for_outage_tolerance", default="1h",
                   help="Longest outage after which an alert's for-state is still restored.")
    p.add_argument("--resend-delay", dest="resend_delay", default="1m",
                   help="Least time before a firing alert is sent again.")
    p.add_argument("--http-address", default="0.0.0.0:10902")
    p.add_argument("--grpc-address", default="0.0.0.0:10901",
                   help="Rules API, and in stateful mode the StoreAPI over the rule results.")
    p.add_argument("--tsdb.block-duration", dest="tsdb_block_duration", default="2h")
    p.add_argument("--tsdb.retention", dest="tsdb_retention", default="48h",
                   help="How long blocks stay on local disk.")
    add_server_tls_flags(p)
    _http_config_flag(p)


def rule_config(a: argparse.Namespace):
    """The ruler's configuration; ValueError naming the flag on a value it cannot run with."""
    from ruler.config import RulerConfig
    from ruler.notifier import alertmanager_url
    from ruler.storage import parse_remote_write_config
    if a.remote_write_config_file and a.remote_write_config:
        raise ValueError("both --remote-write.config-file and --remote-write.config flags set.")
    rw = a.remote_write_config or ""
    if a.remote_write_config_file:
        try:
            rw = Path(a.remote_write_config_file).read_text()
        except OSError as e:
            raise ValueError(f"--remote-write.config-file: {e}") from None
    parse_remote_write_config(rw)
    if not a.queries and not a.query_sd_files:  # Thanos's messages
        raise ValueError("no query configuration parameter was given")
    dup = next((q for i, q in enumerate(a.queries) if q in a.queries[:i]), None)
    if dup is not None:
        raise ValueError(f"Address {dup} is duplicated for --query flag.")
    for u in a.alertmanager_urls:
        alertmanager_url(u)
    ms = {flag: _flag_duration_ms(a, dest, flag) for dest, flag in (
        ("eval_interval", "--eval-interval"), ("query_sd_interval", "--query.sd-interval"),
        ("alertmanager_timeout", "--alertmanagers.send-timeout"),
        ("for_grace_period", "--for-grace-period"),
        ("for_outage_tolerance", "--for-outage-tolerance"), ("resend_delay", "--resend-delay"),
        ("tsdb_block_duration", "--tsdb.block-duration"), ("tsdb_retention", "--tsdb.retention"))}
    if ms["--eval-interval"] <= 0:
        raise ValueError("--eval-interval must be greater than 0")
    return RulerConfig(
        rule_files=a.rule_files or ["rules/"], eval_interval_ms=ms["--eval-interval"],
        queries=list(a.queries), query_sd_files=list(a.query_sd_files),
        query_sd_interval_s=ms["--query.sd-interval"] / 1000,
        query_http_method=a.query_http_method,
        external_labels=tuple(sorted(dict(parse_label_flag(x) for x in a.labels).items())),
        data_dir=Path(a.data_dir), objstore_config=objstore_yaml(a), remote_write_config=rw,
        alertmanager_urls=list(a.alertmanager_urls),
        alertmanager_timeout_s=ms["--alertmanagers.send-timeout"] / 1000,
        alert_query_url=a.alert_query_url, alert_label_drop=list(a.alert_label_drop),
        for_grace_period_ms=ms["--for-grace-period"],
        for_outage_tolerance_ms=ms["--for-outage-tolerance"],
        resend_delay_ms=ms["--resend-delay"], http_address=a.http_address,
        grpc_address=a.grpc_address, block_duration_ms=ms["--tsdb.block-duration"] or 7_200_000,
        retention_ms=ms["--tsdb.retention"], grpc_server_tls=server_tls_from_flags(a),
        http_config=_http_config(a), flags=command_flags(a))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="promring", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("receive", help="Accept Prometheus remote_write and serve it over the StoreAPI.")
    _common(r)
    _receive_flags(r, up=False)
    r.add_argument("--grpc-address", default="0.0.0.0:10901")
    r.add_argument("--receive.capnproto-address", dest="capnproto_address", default="0.0.0.0:19391",
                   help="Address of the Cap'n Proto server (ingestors; for routers replicating "
                        "with --receive.replication-protocol=capnproto).")
    r.add_argument("--http-address", default="0.0.0.0:10902")
    r.add_argument("--tsdb.path", dest="tsdb_path", default="./data")
    add_server_tls_flags(r)
    _routing_flags(r)

    q = sub.add_parser("query", help="Answer PromQL over StoreAPI endpoints (Prometheus HTTP API).")
    _common(q)
    _query_flags(q)
    q.add_argument("--http-address", default="0.0.0.0:10902")
    q.add_argument("--endpoint", "--store", dest="endpoints", action="append", default=[],
                   help="StoreAPI gRPC address (repeatable).")
    _query_endpoint_flags(q)
    add_server_tls_flags(q)
    add_client_tls_flags(q)
    _http_config_flag(q)

    st = sub.add_parser("store", help="Serve blocks from object storage over the StoreAPI.")
    _common(st)
    st.add_argument("--data-dir", default="./data", help="Local cache of index-headers.")
    add_objstore_flags(st, required=True)
    st.add_argument("--grpc-address", default="0.0.0.0:10901")
    st.add_argument("--http-address", default="0.0.0.0:10902")
    st.add_argument("--sync-block-duration", dest="sync_block_duration", default="15m",
                    help="How often the bucket is scanned for new and deleted blocks.")
    st.add_argument("--block-sync-concurrency", dest="block_sync_concurrency", default="20",
                    help="Blocks whose meta and index-header are loaded at once in a sync.")
    _store_block_filter_flags(st)
    _store_cache_flags(st)
    _store_limit_flags(st)
    add_server_tls_flags(st)
    _http_config_flag(st)

    sc = sub.add_parser("sidecar", help="Next to a Prometheus: its data over the StoreAPI, its "
                                        "blocks shipped to the bucket, its config reloaded.")
    _common(sc)
    from sidecar.flags import add_sidecar_flags
    add_sidecar_flags(sc)
    _http_config_flag(sc)

    qf = sub.add_parser("query-frontend", help="In front of queriers: range queries split by "
                                              "day, cached and retried; every other call proxied.")
    _common(qf)
    from frontend.flags import add_frontend_flags
    add_frontend_flags(qf)
    _http_config_flag(qf)

    t = sub.add_parser("tools", help="Utilities.")
    tsub = t.add_subparsers(dest="tool", required=True)
    b = tsub.add_parser("bucket", help="Inspect and maintain a bucket.")
    bsub = b.add_subparsers(dest="bucket_cmd", required=True)
    for name, what in (("ls", "List blocks."), ("inspect", "Blocks with time ranges, labels, resolution, sizes."),
                       ("verify", "Report overlaps and broken blocks (exit 1 if any).")):
        c = bsub.add_parser(name, help=what)
        _common(c)
        add_objstore_flags(c, required=True)
        c.add_argument("--output", "-o", default="table", choices=["table", "json"])
        if name == "verify":
            c.add_argument("--deep", action="store_true", help="Also read every chunk and check its CRC.")
    from promring.bucketflags import add_maintenance_commands
    add_maintenance_commands(bsub, _common)
    w = bsub.add_parser("web", help="Web UI of the bucket's blocks on a timeline (Thanos's bucket UI).")
    _common(w)
    add_objstore_flags(w, required=True)
    w.add_argument("--http-address", default="0.0.0.0:10902", help="Address of the web UI.")
    w.add_argument("--refresh", default="30m", help="How often the bucket is listed again.")
    w.add_argument("--label", default="", help="External label whose value names a group of blocks.")
    w.add_argument("--web.external-prefix", dest="web_external_prefix", default="",
                   help="Prefix of links behind a reverse proxy.")

    ru = sub.add_parser("rule", help="Evaluate Prometheus recording and alerting rules against "
                                     "queriers; store the results and send alerts.")
    _common(ru)
    _rule_flags(ru)

    from compactor.config import add_compact_flags
    cp = sub.add_parser("compact", help="Compact, deduplicate, downsample and apply retention in a bucket.")
    _common(cp)
    add_compact_flags(cp)

    u = sub.add_parser("up", help="Everything on one machine: ingestor, store gateway and querier "
                                  "over a filesystem bucket in the data dir.")
    _common(u)
    _receive_flags(u, up=True)
    _query_flags(u)
    u.add_argument("--data-dir", default="./data")
    u.add_argument("--http-address", default="0.0.0.0:10902", help="Prometheus query API address.")
    u.add_argument("--grpc-address", default="127.0.0.1:0",
                   help="The ingestor's StoreAPI address (port 0: any free port on loopback).")
    return parser


def receive_config(a: argparse.Namespace, tsdb_path: str, http_address: str, grpc_address: str,
                   objstore_config: str | None = None):
    from receiver.config import ReceiveConfig
    labels = tuple(sorted(dict(parse_label_flag(x) for x in a.labels).items()))
    if objstore_config is None:
        objstore_config = objstore_yaml(a)
    return ReceiveConfig(
        objstore_config=objstore_config, retention_ms=parse_duration_ms(a.tsdb_retention),
        remote_write_address=a.remote_write_address, grpc_address=grpc_address,
        http_address=http_address, tsdb_path=Path(tsdb_path), external_labels=labels,
        tenant_header=a.tenant_header, default_tenant=a.default_tenant,
        tenant_label_name=a.tenant_label_name, max_request_bytes=parse_bytes(a.max_request_size),
        wal_fsync=a.wal_fsync, chunk_range_ms=parse_duration_ms(a.min_block_duration),
        wal_compression=a.wal_compression,
        limits_file=Path(a.limits_file) if a.limits_file else None,
        replica_header=getattr(a, "replica_header", "THANOS-REPLICA"),
        too_far_in_future_ms=parse_duration_ms(a.too_far_in_future),
        rejected_log_interval_s=parse_duration_ms(a.rejected_log_interval) / 1000,
        ooo_window_ms=parse_duration_ms(a.ooo_time_window),
        max_exemplars=max(0, a.max_exemplars),
        grpc_server_tls=server_tls_from_flags(a), remote_write_tls=_remote_write_tls(a),
        forward_tls=client_tls_from_flags(a, "remote-write.client"),
        http_config=_http_config(a), tenant_certificate_field=a.tenant_certificate_field,
        capnproto_address=getattr(a, "capnproto_address", ""),
        **_routing_config(a))


def _remote_write_tls(a: argparse.Namespace):
    tls = server_tls_from_flags(a, "remote-write.server")
    if a.tenant_certificate_field and not (tls and tls.client_ca):
        if not _web_config_verifies_clients(a):
            raise ValueError("--receive.tenant-certificate-field needs verified client "
                             "certificates: set --remote-write.server-tls-client-ca")
    return tls


def _query_tenant_certificate_field(a: argparse.Namespace) -> str:
    """--query.tenant-certificate-field, refused without client certificates to read it from."""
    field = getattr(a, "query_tenant_certificate_field", "")
    if field and not _web_config_verifies_clients(a):
        raise ValueError("--query.tenant-certificate-field needs verified client certificates: "
                         "set client_ca_file in --http.config's tls_server_config")
    return field


def _web_config_verifies_clients(a: argparse.Namespace) -> bool:
    from common.webconfig import verifies_clients
    return verifies_clients(getattr(a, "http_config", ""))


def _http_config(a: argparse.Namespace) -> str:
    """--http.config, checked now so that a bad file stops the start with a clear message."""
    if getattr(a, "http_config", ""):
        from common.webconfig import WebConfigError, load_web_config
        try:
            load_web_config(a.http_config)
        except WebConfigError as e:
            raise ValueError(f"--http.config: {e}") from None
    return getattr(a, "http_config", "")


def _routing_config(a: argparse.Namespace) -> dict:
    if getattr(a, "hashrings_file", None) is None and not getattr(a, "hashrings_content", None):
        return {}
    if a.replication_factor < 1:
        raise SystemExit("--receive.replication-factor must be at least 1")
    return dict(hashrings_file=Path(a.hashrings_file) if a.hashrings_file else None,
                hashrings_content=a.hashrings_content,
                hashrings_algorithm=a.hashrings_algorithm,
                hashrings_refresh_s=parse_duration_ms(a.hashrings_refresh) / 1000,
                replication_factor=a.replication_factor, local_endpoint=a.local_endpoint,
                forward_timeout_s=parse_duration_ms(a.forward_timeout) / 1000,
                grpc_compression=a.grpc_compression,
                replication_protocol=a.replication_protocol)


def query_config(a: argparse.Namespace, endpoints: list[str]):
    """The querier's configuration; ValueError (naming the flag) on a value it cannot serve with."""
    from querier.config import QueryConfig
    cfg = QueryConfig(
        http_address=a.http_address, endpoints=endpoints,
        lookback_delta_ms=_flag_duration_ms(a, "lookback_delta", "--query.lookback-delta"),
        timeout_s=_flag_duration_ms(a, "query_timeout", "--query.timeout") / 1000,
        max_concurrent=a.max_concurrent,
        slow_query_s=(-1 if a.slow_query.startswith("-") else 1) * parse_duration_ms(
            a.slow_query.removeprefix("-")) / 1000,
        max_samples=a.max_samples, auto_downsampling=a.auto_downsampling,
        promql_features=_promql_features(a.enable_feature),
        replica_labels=list(a.replica_labels), dedup_func=a.dedup_func,
        partial_response=a.partial_response, tenant_header=a.query_tenant_header,
        default_tenant=a.query_default_tenant, tenant_label_name=a.query_tenant_label,
        enforce_tenancy=a.enforce_tenancy, cors_origin=a.cors_origin,
        tenant_certificate_field=_query_tenant_certificate_field(a),
        flags=command_flags(a), storage_retention=getattr(a, "tsdb_retention", ""),
        grpc_server_tls=server_tls_from_flags(a), grpc_client_tls=client_tls_from_flags(a), http_config=_http_config(a),
        **_query_endpoint_config(a))
    cfg.validate()
    return cfg


def _promql_features(values: list[str]) -> frozenset[str]:
    """--enable-feature values PromQL knows; others are logged and ignored, as Prometheus does."""
    from querier.promql.types import PROMQL_FEATURES
    asked = {f.strip() for v in values for f in v.split(",") if f.strip()}
    for f in sorted(asked - PROMQL_FEATURES):
        logging.getLogger("promring").warning("Unknown option for --enable-feature: %s", f)
    return frozenset(asked & PROMQL_FEATURES)


# Flags that may hold credentials: shown as <secret> (inline bucket configs, passwords, tokens).
SECRET_FLAGS = re.compile(r"objstore\.config$|password|secret|token")


def command_flags(a: argparse.Namespace) -> dict[str, str]:
    """Every flag of ``a``'s subcommand and its value as text, as ``/api/v1/status/flags``
    shows them (name without the dashes; repeated flags joined by commas)."""
    command = getattr(a, "command", None)
    sub = next((act.choices.get(command) for act in build_parser()._actions
                if isinstance(act, argparse._SubParsersAction)), None) if command else None
    flags: dict[str, str] = {}
    for act in sub._actions if sub is not None else []:
        names = [o for o in act.option_strings if o.startswith("--")]
        if not names or not hasattr(a, act.dest) or act.dest in ("help", "version"):
            continue
        v = getattr(a, act.dest)
        text = (",".join(map(str, v)) if isinstance(v, (list, tuple)) else
                str(v).lower() if isinstance(v, bool) else "" if v is None else str(v))
        name = names[0][2:]
        flags[name] = "<secret>" if SECRET_FLAGS.search(name) and text else text
    return flags


def _flag_duration_ms(a: argparse.Namespace, dest: str, flag: str) -> int:
    try:
        return parse_duration_ms(getattr(a, dest))
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None


def _query_endpoint_config(a: argparse.Namespace) -> dict:
    """QueryConfig fields of _query_endpoint_flags (``promring up`` has none of them)."""
    if not hasattr(a, "strict_endpoints"):
        return {}
    if a.endpoint_sd_config_file and a.endpoint_sd_config:
        raise SystemExit("both --endpoint.sd-config-file and --endpoint.sd-config flags set.")
    if a.endpoint_sd_config:
        from querier.filesd import FileSDError, parse_endpoint_config
        try:
            parse_endpoint_config(a.endpoint_sd_config, "--endpoint.sd-config")
        except FileSDError as e:
            raise SystemExit(str(e)) from None
    return dict(strict_endpoints=list(a.strict_endpoints), sd_files=list(a.sd_files),
                sd_interval_s=parse_duration_ms(a.sd_interval) / 1000,
                endpoint_config_file=a.endpoint_sd_config_file, endpoint_config=a.endpoint_sd_config,
                endpoint_config_interval_s=parse_duration_ms(a.endpoint_sd_config_interval) / 1000,
                store_response_timeout_s=parse_duration_ms(a.store_response_timeout) / 1000,
                external_prefix=a.web_external_prefix,
                route_prefix=a.web_route_prefix or a.web_external_prefix,
                grpc_address=a.grpc_address)


def listen_addresses(components: list, a: argparse.Namespace) -> dict[str, str]:
    """``<server>_address`` fields for the start-up log: the configured host, the bound port."""
    out: dict[str, str] = {}
    for c in components:
        ports = dict(getattr(c, "ports", None) or {})
        for key, attr in (("http", "port"), ("grpc", "grpc_port")):
            if getattr(c, attr, 0):
                ports.setdefault(key, getattr(c, attr))
        for key, port in ports.items():
            host = str(getattr(a, f"{key}_address", "") or "").rpartition(":")[0]
            out[f"{key}_address"] = f"{host or '0.0.0.0'}:{port}"
    return out


async def _run_until_signal(components: list, a: argparse.Namespace | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = []
    what = {"component": " ".join(x for x in (getattr(a, "command", ""), getattr(a, "bucket_cmd", ""))
                                  if x)}
    starting = True
    trimmer: asyncio.Task | None = None
    serves_queries = bool(components) and all(getattr(c, "FREEZE_HEAP_AFTER_START", False)
                                              for c in components)
    if serves_queries:
        keep_freed_memory()  # before start-up's threads, or each keeps a glibc arena of its own
    try:
        for c in components:
            started.append(c)  # stopped below also when its start fails half way
            await c.start()
        starting = False
        if serves_queries:
            # common.gcheap: start-up objects out of every GC walk; freed query memory kept
            # for the next query while busy, given back once idle
            if freeze_startup_heap():
                trimmer = asyncio.create_task(trim_when_idle())
        log.info("promring is up", extra={**what, **listen_addresses(components, a or argparse.Namespace())})
        await stop.wait()
        log.info("shutting down", extra=what)
    finally:
        await cancel_and_wait(trimmer)
        for c in reversed(started):
            try:
                await c.stop()
            except Exception:  # noqa: BLE001 - a half-started one; the start error is reported
                if not starting:
                    raise
                log.debug("stopping a component that failed to start", exc_info=True)
    log.info("stopped cleanly", extra=what)


def _store_cache_flags(p: argparse.ArgumentParser) -> None:
    """Thanos's store gateway cache flags (YAML formats in README's store section)."""
    p.add_argument("--index-cache-size", dest="index_cache_size", default="250MB",
                   help="In-process cache of postings, series and chunks; ignored when "
                        "--index-cache.config(-file) says IN-MEMORY.")
    for flag, dest in (("index-cache", "index_cache"), ("store.caching-bucket", "caching_bucket")):
        p.add_argument(f"--{flag}.config-file", dest=f"{dest}_config_file", default=None,
                       help="Path to the cache YAML (Thanos's format).")
        p.add_argument(f"--{flag}.config", dest=f"{dest}_config", default=None,
                       help=f"Alternative to --{flag}.config-file: the YAML itself.")


def _store_limit_flags(p: argparse.ArgumentParser) -> None:
    """Thanos's store gateway Series limits and served time window (store/limits.py)."""
    from store.limits import MAX_TIME_DEFAULT, MIN_TIME_DEFAULT
    for flag, dest, what in (
            ("store.limits.request-series", "request_series", "series"),
            ("store.limits.request-samples", "request_samples", "samples (counted as "
                                                               "chunks x 120)")):
        p.add_argument(f"--{flag}", dest=dest, default="0",
                       help=f"Most {what} a single Series request may touch; over it the call "
                            "fails with ResourceExhausted. 0: no limit.")
    p.add_argument("--store.grpc.touched-series-limit", dest="touched_series_limit",
                   help="Deprecated: use --store.limits.request-series.")
    p.add_argument("--store.grpc.series-sample-limit", dest="series_sample_limit",
                   help="Deprecated: use --store.limits.request-samples.")
    p.add_argument("--store.grpc.series-max-concurrency", dest="series_max_concurrency",
                   default="20", help="Most Series calls served at once; others wait.")
    p.add_argument("--store.grpc.downloaded-bytes-limit", dest="downloaded_bytes_limit",
                   default="0", help="Most bytes of postings, series and chunks a single "
                   "Series/LabelNames/LabelValues call may read (estimated before reading, "
                   "as Thanos); over it the call fails with ResourceExhausted. 0: no limit.")
    p.add_argument("--min-time", dest="min_time", default=MIN_TIME_DEFAULT,
                   help="Serve only blocks after this: an RFC3339 time or a duration relative "
                        "to now such as -2w.")
    p.add_argument("--max-time", dest="max_time", default=MAX_TIME_DEFAULT,
                   help="Serve only blocks before this: an RFC3339 time or a duration "
                        "relative to now such as -1d.")


def _store_block_filter_flags(p: argparse.ArgumentParser) -> None:
    """Thanos's store gateway block filters (store/metafilter.py)."""
    p.add_argument("--consistency-delay", dest="consistency_delay", default="0s",
                   help="Minimum age of a block before it is loaded (by its upload time, "
                        "else its ULID); raise it (e.g. 30m) for an eventually consistent "
                        "bucket.")
    p.add_argument("--ignore-deletion-marks-delay", dest="ignore_deletion_marks_delay",
                   default="24h", help="A block marked for deletion longer ago than this is "
                   "no longer served; set it to half the compactor's --delete-delay.")
    add_path_or_content(p, "selector.relabel-config", "relabel configs (keep, drop, hashmod) "
                        "over each block's external labels and __block_id selecting the "
                        "blocks served")


def _store_limits_config(a: argparse.Namespace):
    from store.limits import StoreLimitsConfig
    if not hasattr(a, "request_series"):  # promring up: Thanos's defaults
        return StoreLimitsConfig()
    series = a.touched_series_limit if a.touched_series_limit is not None else a.request_series
    samples = a.series_sample_limit if a.series_sample_limit is not None else a.request_samples
    return StoreLimitsConfig(int(series), int(samples), int(a.series_max_concurrency),
                             a.min_time, a.max_time,
                             parse_base2_bytes(a.downloaded_bytes_limit))


def _path_or_content(a: argparse.Namespace, flag: str, dest: str) -> str:
    if not hasattr(a, f"{dest}_config"):  # promring up: no such flags
        return ""
    try:
        return path_or_content(a, f"{flag}.config", f"{dest}_config")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def store_config(a: argparse.Namespace, data_dir: str, objstore_config: str, grpc_address: str,
                 http_address: str):
    from store.server import StoreConfig
    return StoreConfig(data_dir=Path(data_dir), objstore_config=objstore_config,
                       grpc_address=grpc_address, http_address=http_address,
                       sync_interval_s=parse_duration_ms(getattr(a, "sync_block_duration", "3m")) / 1000,
                       block_sync_concurrency=int(getattr(a, "block_sync_concurrency", 20)),
                       grpc_server_tls=server_tls_from_flags(a), http_config=_http_config(a),
                       cache_bytes=parse_bytes(getattr(a, "index_cache_size", "250MB")),
                       index_cache_config=_path_or_content(a, "index-cache", "index_cache"),
                       caching_bucket_config=_path_or_content(a, "store.caching-bucket",
                                                              "caching_bucket"),
                       limits=_store_limits_config(a),
                       consistency_delay_s=parse_duration_ms(
                           getattr(a, "consistency_delay", "0s")) / 1000,
                       ignore_deletion_marks_delay_s=parse_duration_ms(
                           getattr(a, "ignore_deletion_marks_delay", "24h")) / 1000,
                       selector_relabel_config=path_or_content(a, "selector.relabel-config")
                       if hasattr(a, "selector_relabel_config") else "")


class _Up:
    """Ingestor, store gateway and querier on one machine.

    Layout under ``--data-dir``: ``receive/<tenant>/`` (WAL, head checkpoints, local blocks),
    ``bucket/`` (the filesystem bucket blocks are shipped to), ``store/`` (index-headers).
    The querier fans out to the ingestor and the store gateway on loopback gRPC ports.
    """

    def __init__(self, a: argparse.Namespace) -> None:
        from receiver.server import Receiver
        self.a = a
        root = Path(a.data_dir)
        self.bucket_dir = root / "bucket"
        self.bucket_dir.mkdir(parents=True, exist_ok=True)
        self.objstore = f"type: FILESYSTEM\nconfig:\n  directory: {self.bucket_dir.resolve()}\n"
        self.objstore = objstore_yaml(a) or self.objstore
        self.receiver = Receiver(receive_config(a, str(root / "receive"), "", a.grpc_address,
                                                objstore_config=self.objstore))
        self.store = None
        self.querier = None
        self.ports: dict[str, int] = {}  # bound ports, for the start-up log

    async def start(self) -> None:
        from querier.server import Querier
        from store.server import StoreGateway
        await self.receiver.start()
        self.store = StoreGateway(store_config(self.a, str(Path(self.a.data_dir) / "store"),
                                               self.objstore, "127.0.0.1:0", ""),
                                  registry=self.receiver.registry)
        await self.store.start()
        endpoints = [f"127.0.0.1:{self.receiver.ports['grpc']}", f"127.0.0.1:{self.store.ports['grpc']}"]
        self.querier = Querier(query_config(self.a, endpoints), registry=self.receiver.registry)
        await self.querier.start()
        self.ports = {"remote_write": self.receiver.ports["remote_write"],
                      "http": self.querier.port, "grpc": self.receiver.ports["grpc"]}

    async def stop(self) -> None:
        if self.querier is not None:
            await self.querier.stop()
        if self.store is not None:
            await self.store.stop()
        await self.receiver.stop()


async def _run_compactor(a: argparse.Namespace) -> int:
    """One pass (exit 1 if a group halted, as Thanos), or with --wait until SIGTERM."""
    from compactor import Compactor, cli_config
    c = Compactor(cli_config(a))
    task = asyncio.get_running_loop().create_task(c.run())
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        res = await task
        code = 1 if res.halted else 0
    except asyncio.CancelledError:
        log.info("shutting down", extra={"component": "compact"})
        code = 0
    finally:
        await c.close()
    log.info("stopped cleanly", extra={"component": "compact"})
    return code


def _or_exit(build, *args):
    """``build(*args)``, or FlagError: one line naming the subcommand, exit status 2."""
    from promring.flagcheck import FlagError
    try:
        return build(*args)
    except ValueError as e:
        raise FlagError(" ".join(str(e).split())) from None


def main(argv: list[str] | None = None) -> None:
    from common._hugearena import enable as heap_in_huge_pages
    from promring.startup import run_reporting_errors
    heap_in_huge_pages()  # a big heap (1M series) then exits in a fraction of the time
    parser = build_parser()
    a, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(parser, a, unknown)
    run_reporting_errors(a, _run)


def _refuse_unknown(parser: argparse.ArgumentParser, a: argparse.Namespace,
                    unknown: list[str]) -> None:
    """An unknown flag is named by the subcommand that refused it, with the closest real one."""
    import difflib
    for attr in ("command", "tool", "bucket_cmd"):
        subs = next((act for act in parser._actions
                     if isinstance(act, argparse._SubParsersAction)), None)
        if subs is None or getattr(a, attr, None) not in subs.choices:
            break
        parser = subs.choices[getattr(a, attr)]
    known = [o for act in parser._actions for o in act.option_strings]
    close = difflib.get_close_matches(unknown[0].split("=", 1)[0], known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def _run(a: argparse.Namespace) -> None:
    from promring.flagcheck import check_environment, check_flags
    check_flags(a)  # FlagError: one line, exit 2, before any slow work
    check_environment(a)
    setup_logging(a.log_level, a.log_format)
    raise_open_files_limit()
    if a.command == "receive":
        from receiver.hashring import HashringConfigError
        from receiver.server import Receiver
        try:
            comps = [Receiver(_or_exit(receive_config, a, a.tsdb_path, a.http_address,
                                       a.grpc_address))]
        except HashringConfigError as e:  # refused at start, as Thanos does
            raise SystemExit(f"invalid hashrings configuration: {e}") from None
    elif a.command == "query":
        from querier.server import Querier
        comps = [Querier(_or_exit(query_config, a, a.endpoints))]
    elif a.command == "store":
        from store.server import StoreGateway
        comps = [_or_exit(StoreGateway, _or_exit(store_config, a, a.data_dir, objstore_yaml(a),
                                                 a.grpc_address, a.http_address))]
    elif a.command == "rule":
        from ruler.rulefile import RuleFileError, load_rule_files
        from ruler.server import Ruler
        cfg = _or_exit(rule_config, a)
        try:
            load_rule_files(cfg.rule_files)  # a bad rule file: one line, exit 2
        except RuleFileError as e:
            print(f"promring rule: {e}", file=sys.stderr)
            sys.exit(2)
        comps = [Ruler(cfg)]
    elif a.command == "sidecar":
        from sidecar.flags import sidecar_config
        from sidecar.server import Sidecar, run_until_signal
        _or_exit(_http_config, a)
        code = aio.run(run_until_signal(Sidecar(_or_exit(sidecar_config, a))))
        _exit_after_clean_stop(code)
    elif a.command == "query-frontend":
        from frontend.flags import frontend_config
        from frontend.server import QueryFrontend
        _or_exit(_http_config, a)
        comps = [QueryFrontend(_or_exit(frontend_config, a))]
    elif a.command == "tools":
        from promring.tools import run_bucket_tool, run_verify
        if a.bucket_cmd == "web":
            from promring.bucketweb import BucketWeb
            from querier.server import normalize_prefix
            refresh_s = _or_exit(_flag_duration_ms, a, "refresh", "--refresh") / 1000
            comps = [_or_exit(BucketWeb, objstore_yaml(a), a.http_address, refresh_s, a.label,
                              normalize_prefix(a.web_external_prefix))]
            aio.run(_run_until_signal(comps, a))
            return
        from promring.bucketflags import MAINTENANCE_COMMANDS, run_maintenance
        if a.bucket_cmd in MAINTENANCE_COMMANDS:
            run_maintenance(a)
            return
        if a.bucket_cmd == "verify":
            text, ok = run_verify(objstore_yaml(a), a.deep, a.output)
            print(text)
            sys.exit(0 if ok else 1)
        print(run_bucket_tool(a.bucket_cmd, objstore_yaml(a), a.output))
        return
    elif a.command == "compact":
        from compactor import cli_config as compact_config
        _or_exit(_http_config, a)
        _or_exit(compact_config, a)  # flag errors before anything starts
        sys.exit(aio.run(_run_compactor(a)))
    else:
        _or_exit(query_config, a, [])  # flag errors before anything starts
        comps = [_or_exit(_Up, a)]
    try:
        aio.run(_run_until_signal(comps, a))
    except KeyboardInterrupt:
        pass
    _exit_after_clean_stop(0)


def _exit_after_clean_stop(code: int) -> None:
    """Every component stopped (WALs synced and closed); skip the interpreter's teardown of
    a large heap and of gRPC's threads (most of a second), as a Go server simply exits."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
