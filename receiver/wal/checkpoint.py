"""WAL checkpoints: the head's live state written as a WAL of its own, so old segments can go.

After the head persisted a block up to ``t``, the segments before a fresh one hold nothing the
head still needs that is not also in the block -- except the series definitions and samples
>= ``t``. A checkpoint ``checkpoint.NNNNNNNN`` holds exactly those (written in a temp dir, fsynced,
renamed), then segments < NNNNNNNN are deleted. Replay reads the newest checkpoint, then the
segments from NNNNNNNN on. Replaying a sample twice is harmless: the head ignores exact
duplicates and refuses older ones, which replay does not report.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .records import HistogramsRecord, SamplesRecord, SeriesRecord
from .wal import WAL, WALConfig

_NAME = re.compile(r"^checkpoint\.(\d{8})$")


def checkpoints(wal_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints, oldest first (temp dirs of interrupted ones are not listed)."""
    if not wal_dir.is_dir():
        return []
    out = []
    for p in wal_dir.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def write_checkpoint(wal_dir: Path, segment: int,
                     records: Iterable[tuple], compression: bool = True) -> Path:
    """Write ``checkpoint.<segment>`` atomically and remove older checkpoints and temp dirs.

    ``records`` yields ``(SeriesRecord | None, SamplesRecord | None)`` or, with native
    histograms and out-of-order samples, ``(..., HistogramsRecord | None,
    OOOSamplesRecord | None)``: the arguments of :meth:`WAL.log`. ``compression`` as the WAL's."""
    final = wal_dir / f"checkpoint.{segment:08d}"
    tmp = wal_dir / f"checkpoint.{segment:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cp = WAL(WALConfig(dir=tmp, fsync="none", compression=compression))
    try:
        for rec in records:
            cp.log(*rec)
    finally:
        cp.close()
    for f in tmp.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    fd = os.open(wal_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for seg, path in checkpoints(wal_dir):
        if seg < segment:
            shutil.rmtree(path, ignore_errors=True)
    for p in wal_dir.glob("checkpoint.*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
    return final


def replay_checkpoint(path: Path, on_corruption: Callable[[str], None] | None = None
                      ) -> Iterator[SeriesRecord | SamplesRecord | HistogramsRecord]:
    cp = WAL(WALConfig(dir=path, fsync="none"))
    try:
        yield from cp.replay(on_corruption)
    finally:
        cp.close()
