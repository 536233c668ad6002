"""Flags and dispatch of ``promring tools bucket mark|rewrite|upload-blocks|retention``, with
Thanos's names and defaults (cmd/thanos/tools_bucket.go)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from common.units import parse_label_flag
from objstore.flags import add_objstore_flags, objstore_yaml
from objstore.flags import add_path_or_content as _path_or_content
from objstore.flags import path_or_content as _content

MAINTENANCE_COMMANDS = ("mark", "rewrite", "upload-blocks", "retention")


def _command(bsub, name: str, what: str, common: Callable[[argparse.ArgumentParser], None],
             ids: str = "") -> argparse.ArgumentParser:
    """A subcommand with the logging and objstore flags, and ``--id`` when ``ids`` says what
    the blocks are for."""
    p = bsub.add_parser(name, help=what)
    common(p)
    add_objstore_flags(p, required=True)
    if ids:
        p.add_argument("--id", dest="ids", action="append", default=[], required=True,
                       help=f"ID (ULID) of a block to {ids} (repeatable).")
    return p


def add_maintenance_commands(bsub, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the four subcommands on ``tools bucket``'s subparsers."""
    from compactor.marks import MARKERS
    m = _command(bsub, "mark", "Mark blocks for deletion, no-compaction or no-downsampling "
                               "(or remove a mark with --remove).", common, ids="mark")
    m.add_argument("--marker", required=True, choices=MARKERS, help="Marker to be put.")
    m.add_argument("--details", default="", help="Human readable details put into the marker "
                                                 "(required unless --remove).")
    m.add_argument("--remove", default=False, action=argparse.BooleanOptionalAction,
                   help="Remove the marker instead.")

    r = _command(bsub, "rewrite", "Write blocks again without the series (or time ranges) "
                                  "that deletion requests select.", common, ids="rewrite")
    r.add_argument("--tmp.dir", dest="tmp_dir",
                   default=os.path.join(tempfile.gettempdir(), "thanos-rewrite"),
                   help="Working directory for temporary files.")
    r.add_argument("--dry-run", dest="dry_run", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="Only print what would be deleted; pass --no-dry-run to rewrite.")
    r.add_argument("--prom-blocks", dest="prom_blocks", default=False,
                   action=argparse.BooleanOptionalAction,
                   help="Blocks are plain Prometheus blocks: do not require external labels.")
    r.add_argument("--delete-blocks", dest="delete_blocks", default=False,
                   action=argparse.BooleanOptionalAction,
                   help="Mark each original block for deletion once its rewrite is uploaded "
                        "(not in a dry run).")
    r.add_argument("--hash-func", dest="hash_func", default="", choices=["", "SHA256"],
                   help="Hash of each uploaded file recorded in meta.json (\"\" = none).")
    _path_or_content(r, "rewrite.to-delete-config", "deletion requests "
                     "([{matchers: '{...}', intervals: [{mint, maxt}]}])")
    _path_or_content(r, "rewrite.to-relabel-config", "relabel configs (keep and drop actions)")
    r.add_argument("--rewrite.add-change-log", dest="add_change_log", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="Write every deletion to change.log in the new block's directory under "
                        "--tmp.dir.")

    u = _command(bsub, "upload-blocks", "Upload the blocks of a Prometheus data directory to "
                                        "the bucket (migration).", common)
    u.add_argument("--path", default="./data", help="Directory holding the blocks to upload.")
    u.add_argument("--label", dest="labels", action="append", default=[],
                   help='External label added to the uploaded blocks, as name="value" '
                        "(repeatable; at least one).")
    u.add_argument("--shipper.upload-compacted", dest="upload_compacted", default=False,
                   action=argparse.BooleanOptionalAction,
                   help="Also upload compacted blocks (compaction level > 1).")
    u.add_argument("--shipper.upload-concurrency", dest="upload_concurrency", type=int,
                   default=5, help="Block files uploaded at the same time.")

    t = _command(bsub, "retention", "Mark blocks past retention for deletion (the compactor's "
                                    "retention alone; run no compactor on the bucket meanwhile).",
                 common)
    t.add_argument("--delete-delay", dest="delete_delay", default="48h",
                   help="Time before a block marked for deletion is deleted (by the compactor).")
    t.add_argument("--consistency-delay", dest="consistency_delay", default="30m",
                   help="Minimum age of fresh (non-compacted) blocks before they are processed.")
    t.add_argument("--block-sync-concurrency", dest="block_sync_concurrency", type=int,
                   default=20, help="Block metadata read from the bucket at the same time.")
    _path_or_content(t, "selector.relabel-config", "relabel configs selecting the blocks to "
                     "act on by their external labels (keep, drop and hashmod actions)")
    for res, what in (("raw", "raw samples"), ("5m", "5m downsampled samples"),
                      ("1h", "1h downsampled samples")):
        t.add_argument(f"--retention.resolution-{res}", dest=f"retention_{res}", default="0d",
                       help=f"How long to retain {what}; 0d keeps them forever.")


def run_maintenance(a: argparse.Namespace) -> None:
    """Run the chosen subcommand; one-line error and exit 2 on a mistake in the flags."""
    from objstore import BucketError
    try:
        lines = _run(a)
    except ValueError as e:
        print(f"promring tools bucket {a.bucket_cmd}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (BucketError, OSError) as e:  # the bucket or a local directory failed us
        print(f"promring tools bucket {a.bucket_cmd}: error: {e}", file=sys.stderr)
        sys.exit(1)
    for line in lines:
        print(line)


def _run(a: argparse.Namespace) -> list[str]:
    from .bucketops import UploadOptions, run_mark, run_retention, run_upload_blocks
    cmd = a.bucket_cmd
    if cmd == "mark":
        return run_mark(objstore_yaml(a), a.ids, a.marker, a.details, a.remove)
    if cmd == "upload-blocks":
        if a.upload_concurrency < 1:
            raise ValueError("--shipper.upload-concurrency must be at least 1")
        labels = {}
        for x in a.labels:
            try:
                k, v = parse_label_flag(x)
            except ValueError as e:
                raise ValueError(f"--label: {e}") from None
            labels[k] = v
        return run_upload_blocks(objstore_yaml(a), UploadOptions(
            Path(a.path), labels, a.upload_compacted, a.upload_concurrency))
    if cmd == "retention":  # --block-sync-concurrency: checked at start (promring.flagcheck);
        # --selector.relabel-config: read by the compactor's config (compactor.cli_config)
        return [f"marked {run_retention(a)} block(s) past retention for deletion"]
    from .rewrite import RewriteOptions, parse_deletion_requests, parse_relabel_configs, run_rewrite
    deletes = _content(a, "rewrite.to-delete-config")
    relabels = _content(a, "rewrite.to-relabel-config")
    if not deletes.strip() and not relabels.strip():
        raise ValueError("rewrite configuration should be provided: --rewrite.to-delete-config"
                         "(-file) or --rewrite.to-relabel-config(-file)")
    return run_rewrite(objstore_yaml(a), RewriteOptions(
        ids=a.ids, deletions=parse_deletion_requests(deletes) if deletes.strip() else [],
        relabels=parse_relabel_configs(relabels) if relabels.strip() else [],
        tmp_dir=Path(a.tmp_dir), dry_run=a.dry_run, delete_blocks=a.delete_blocks,
        prom_blocks=a.prom_blocks, hash_func=a.hash_func, add_change_log=a.add_change_log))
