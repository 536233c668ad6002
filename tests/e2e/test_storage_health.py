"""An ingestor whose data dir stops taking writes (full, or no longer a directory) is not ready,
answers writes 503 (which Prometheus retries) and logs the cause once; it recovers by itself
once the storage works again, and what it acknowledged is served.

Tests run as root, which ignores file modes, so the failures are real ones: a tiny tmpfs filled
up (ENOSPC), and the data dir replaced by a regular file (ENOTDIR)."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness import receive_process
from rw import push

M = "__name__"
T = 1_700_000_000_000


def _ready(proc) -> int:
    return requests.get(proc.url("remote_write", "/-/ready"), timeout=5).status_code


def _wait(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} after {timeout}s")


def _write(proc, name: str, t: int, tenant: str = "t1") -> requests.Response:
    """40 new series (~10 KB in the WAL: more than what is left of a file's last page). The
    padding is incompressible: the WAL snappy-compresses records, and 200 x's shrank a write
    into the free tail of the last page, so writes on a full disk still succeeded (correctly)."""
    series = [(((M, name), ("i", str(i)), ("pad", _noise(f"{t}-{i}-{tenant}"))), [t], [1.0])
              for i in range(40)]
    return push(proc.url("remote_write", "/api/v1/receive"), series, tenant=tenant)


def _noise(seed: str) -> str:
    return "".join(hashlib.sha256(f"{seed}/{k}".encode()).hexdigest() for k in range(4))


def _failure_lines(proc) -> list[str]:
    return [ln for ln in proc.log_text().splitlines() if "storage failed" in ln]


def _check_unhealthy_then_recovers(proc, heal, tenant: str) -> None:
    codes = [_write(proc, "during", T + 1000 * i, tenant).status_code for i in range(1, 11)]
    assert set(codes) == {503}, codes
    _wait(lambda: _ready(proc) == 503, "not ready")
    assert len(_failure_lines(proc)) == 1, _failure_lines(proc)
    heal()
    _wait(lambda: _ready(proc) == 200, "ready again")
    assert _write(proc, "after", T + 20_000, tenant).status_code == 200
    assert _write(proc, "after", T + 21_000, "new-tenant").status_code == 200
    # What was acknowledged replays: the process starts again after kill -9 and restores at
    # least the 3 acknowledged writes of 40 samples each.
    proc.kill9()
    proc.start()
    replayed = [ln for ln in proc.log_text().splitlines() if "WAL replay done" in ln][-1]
    assert int(re.search(r"samples=(\d+)", replayed).group(1)) >= 120, replayed
    assert _write(proc, "after", T + 22_000, tenant).status_code == 200


def _fill(path: Path) -> None:
    """Fill the file system holding ``path`` up to its last byte."""
    for chunk in (65536, 512, 1):
        with open(path, "ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_data_dir_is_not_ready_and_recovers(tiny_tmpfs, procs):
    ing = receive_process(tiny_tmpfs, "ing").start()
    procs.append(ing)
    assert _write(ing, "before", T).status_code == 200
    filler = tiny_tmpfs / "filler"
    _fill(filler)
    _check_unhealthy_then_recovers(ing, filler.unlink, "t1")
    assert "No space left on device" in _failure_lines(ing)[0]


def test_data_dir_replaced_by_a_file_is_not_ready_and_recovers(tmp_path, procs):
    ing = receive_process(tmp_path, "ing").start()
    procs.append(ing)
    assert _write(ing, "before", T).status_code == 200
    data = tmp_path / "ing"
    moved = tmp_path / "ing.moved"
    os.rename(data, moved)
    data.write_text("not a directory")

    def heal() -> None:
        data.unlink()
        os.rename(moved, data)

    _check_unhealthy_then_recovers(ing, heal, "another-tenant")
    assert "Not a directory" in _failure_lines(ing)[0]


def test_start_on_a_full_data_dir_is_not_ready_until_space_is_freed(tiny_tmpfs, procs):
    filler = tiny_tmpfs / "filler"
    _fill(filler)
    ing = receive_process(tiny_tmpfs, "ing")
    ing.ready_urls = []  # it must come up, but not ready
    ing.start()
    procs.append(ing)
    _wait(lambda: _alive_and_answering(ing), "answering")
    assert _ready(ing) == 503
    assert _write(ing, "x", T).status_code == 503
    filler.unlink()
    _wait(lambda: _ready(ing) == 200, "ready")
    assert _write(ing, "x", T + 1000).status_code == 200


def _alive_and_answering(proc) -> bool:
    assert proc.proc.poll() is None, proc.log_text()[-2000:]
    try:
        _ready(proc)
        return True
    except requests.RequestException:
        return False
