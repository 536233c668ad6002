"""``--help`` texts of flags declared without one (their wording follows Thanos's).

Kept apart from the flag declarations so every subcommand gets the same text for a shared flag;
a ``help=`` given where a flag is declared wins. Keys are ``"<subcommand> <flag>"`` for a flag
whose meaning depends on the subcommand, else the flag alone.
"""
from __future__ import annotations

FLAG_HELP: dict[str, str] = {
    "--log.level": "Only log messages with the given severity or above.",
    "--log.format": "Output format of log messages.",
    "--receive.tenant-header": "HTTP header naming the tenant of a write request.",
    "--receive.default-tenant-id": "Tenant of write requests without a tenant header.",
    "--receive.tenant-label-name": "Label through which the tenant is announced on its series.",
    "--tsdb.max-block-duration": "Longest block the head is cut into (Thanos: equal to the min).",
    "--tsdb.path": "Data directory of the ingestor: WAL, head checkpoints and local blocks.",
    "--receive.hashrings-algorithm": "How series are spread over a hashring's endpoints.",
    "--receive.replication-factor": "How many ingestors each series is written to.",
    "--query.lookback-delta": "How far back a sample is looked for at an evaluation step "
                              "(a series with no sample in it is stale).",
    "--query.timeout": "Longest a query may run; it then fails with a timeout error.",
    "--query.max-concurrent": "Queries evaluated at once; further ones wait.",
    "--query.max-samples": "Most samples one query may hold in memory; a query needing more "
                           "fails.",
    "--query.tenant-header": "HTTP header naming the tenant of a query.",
    "--query.default-tenant-id": "Tenant of queries without a tenant header.",
    "--query.tenant-label-name": "Label holding the tenant of a series (for tenancy "
                                 "enforcement).",
    "--grpc-address": "Listen address of the StoreAPI gRPC server.",
    "--http-address": "Listen address of the HTTP server (metrics, health and API).",
    "up --data-dir": "Root of everything: receive/ (WAL, head), bucket/ (shipped blocks) and "
                     "store/ (index-headers).",
    "--data-dir": "Local working directory.",
    "--wait-interval": "Pause between compaction passes with --wait.",
    "--delete-delay": "How long a block marked for deletion stays in the bucket before it is "
                      "deleted (so readers can drop it first).",
    "--consistency-delay": "Blocks younger than this are not compacted (they may still be "
                           "uploading).",
    "--retention.resolution-raw": "How long raw samples are kept; 0d keeps them forever.",
    "--retention.resolution-5m": "How long 5m-downsampled samples are kept; 0d keeps them "
                                 "forever.",
    "--retention.resolution-1h": "How long 1h-downsampled samples are kept; 0d keeps them "
                                 "forever.",
    "--downsampling.disable": "Do not downsample blocks (no 5m and 1h resolutions).",
    "--compact.concurrency": "Groups compacted at once.",
    "--compact.enable-vertical-compaction": "Merge overlapping blocks (replicas of the same "
                                            "data) into one.",
    "--output": "Output format.",
}


def help_for(command: str, flag: str) -> str | None:
    """The help text of ``flag`` in ``command`` (the last word of the parser's prog)."""
    return FLAG_HELP.get(f"{command} {flag}") or FLAG_HELP.get(flag)
