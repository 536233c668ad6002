"""Process limits raised at start, as Go programs (Prometheus, Thanos) do for open files."""
from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (no privilege needed); returns the soft
    limit in force. Many tenants, blocks and connections each need descriptors, and a distro's
    default soft limit of 1024 is far below what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        try:  # the kernel refuses more than fs.nr_open
            target = int(open("/proc/sys/fs/nr_open").read())
        except (OSError, ValueError):
            return soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open files limit", extra={"soft": soft, "err": str(e)})
    return soft
