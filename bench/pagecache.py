"""Evicting a bucket's files from the page cache, so a benchmark's cold run really reads the
disk (Linux; POSIX_FADV_DONTNEED drops clean pages). Point it only at a copy of the blocks
that the benchmark owns: on a shared data set it makes everyone else's reads cold too."""
from __future__ import annotations

import os
from pathlib import Path


def drop_page_cache(directory: Path) -> int:
    """Drops the cached pages of every regular file below ``directory``; returns how many
    bytes those files hold."""
    total = 0
    for path in directory.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total
