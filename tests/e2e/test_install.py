"""A plain (non-editable) ``pip install .`` into a fresh venv gives a working ``promring up``
that starts from an empty folder."""
from __future__ import annotations

import os
import subprocess
import venv

import requests

from harness import REPO, PromringProcess, free_port
from rw import push


def test_plain_pip_install_then_up_from_empty_folder(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(pip + [str(REPO)], check=True, env=env, timeout=900)
    exe = env_dir / "bin" / "promring"
    assert exe.exists()
    # The installed package must not depend on the source tree: run it from elsewhere.
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, check=True)
    for sub in ("receive", "query", "up"):
        assert sub in out.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    rw, http = free_port(), free_port()
    p = PromringProcess([str(exe), "up", "--remote-write.address", f"127.0.0.1:{rw}",
                         "--http-address", f"127.0.0.1:{http}"], empty / "data", rw, http)
    try:
        p.start()
        lbls = (("__name__", "installed"), ("job", "x"))
        assert push(p.write_url, [(lbls, [1_700_000_000_000], [42.0])]).status_code == 200
        r = requests.get(f"{p.api}/query", params={"query": "installed", "time": 1_700_000_000.5}).json()
        assert [s["value"][1] for s in r["data"]["result"]] == ["42"]
        assert (empty / "data").is_dir()
        # The web UI's assets are package data of the installed package.
        base = f"http://127.0.0.1:{http}"
        assert 'data-page="graph"' in requests.get(f"{base}/graph", timeout=10).text
        for asset in ("app.js", "query.js", "style.css"):
            assert requests.get(f"{base}/static/{asset}", timeout=10).status_code == 200, asset
    finally:
        assert p.stop() == 0
