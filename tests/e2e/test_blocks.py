"""Blocks end to end: ours open in promtool, Prometheus's are served by `promring store`, and
S3 (a real moto_server on loopback) carries blocks from the ingestor to the store gateway."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from harness import (PrometheusProcess, free_port, promring_cmd, start_process, stop_process,
                     store_and_query, wait_for_blocks)
from moto import MotoNotInstalled, MotoServer
from rw import push, raw_samples

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="Debian's prometheus package is not installed "
                                           "(the README's test command installs it)")

HOUR = 3_600_000


def known_series(t0: int, n_series: int = 30, n_samples: int = 200, step: int = 15_000):
    rng = np.random.default_rng(3)
    out = []
    for i in range(n_series):
        lbls = (("__name__", "blk_metric"), ("i", f"{i:03d}"), ("job", "blocks"))
        ts = t0 + np.arange(n_samples) * step
        vals = np.round(rng.normal(100, 20, n_samples), 3)
        out.append((lbls, ts.tolist(), vals.tolist()))
    return out


def push_in_rounds(url: str, series, per_round: int = 20) -> None:
    """Time-ordered pushes, as Prometheus sends them."""
    n = len(series[0][1])
    for lo in range(0, n, per_round):
        r = push(url, [(l, ts[lo:lo + per_round], vs[lo:lo + per_round]) for l, ts, vs in series])
        assert r.status_code == 200, r.text


def expected(series) -> dict:
    return {tuple(sorted(dict(l).items())): list(zip(ts, vs)) for l, ts, vs in series}


def served(api: str, t_end_ms: int, window: str = "2h") -> dict:
    got = raw_samples(api, '{__name__="blk_metric"}', t_end_ms / 1000, window)
    return {tuple(sorted((k, v) for k, v in key if k != "tenant_id")):
            [(int(round(p[0] * 1000)), float(p[1])) for p in pts] for key, pts in got.items()}


def parse_dump(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        lbl_part, rest = line.rsplit("} ", 1)
        value, ts = rest.split()
        lbls = tuple(sorted((k, v.strip('"')) for k, v in
                            (p.split("=", 1) for p in lbl_part[1:].split(", "))))
        out.setdefault(lbls, []).append((int(ts), float(value)))
    return out


def blocks_dump(blocks: list[Path], scratch: Path) -> dict:
    """promtool's dump of just these blocks (it would also try to read our WAL as its own)."""
    for b in blocks:
        shutil.copytree(b, scratch / b.name)
    (scratch / "wal").mkdir()
    return parse_dump(subprocess.run(["promtool", "tsdb", "dump", str(scratch)], check=True,
                                     capture_output=True, text=True).stdout)


BLOCK_FLAGS = ("--tsdb.min-block-duration", "10m")


@needs_promtool
def test_our_blocks_open_in_promtool_and_survive_restart(promring_up, tmp_path):
    data = tmp_path / "data"
    t0 = (int(time.time() * 1000) // HOUR - 1) * HOUR
    series = known_series(t0)  # 50 minutes of samples: five 10-minute block ranges
    want = expected(series)
    pr = promring_up(data, *BLOCK_FLAGS)
    push_in_rounds(pr.write_url, series)
    assert pr.stop() == 0  # SIGTERM: no flush; the head stays in the WAL
    pr2 = promring_up(data, *BLOCK_FLAGS)
    assert served(pr2.api, t0 + 4 * HOUR, "5h") == want  # every acked sample, once
    # Blocks are cut on the 1.5-range schedule (the start-up round sees the replayed head)
    # up to 40 minutes in; the last range stays in the head. Then they are shipped.
    tenant_dir = data / "receive" / "default-tenant"
    blocks = wait_for_blocks(tenant_dir, t0 + 39 * 60_000)
    deadline = time.monotonic() + 30
    while not all((data / "bucket" / b.name / "meta.json").exists() for b in blocks):
        assert time.monotonic() < deadline, "blocks were not shipped"
        time.sleep(0.2)
    cut_upto = max(json.loads((b / "meta.json").read_text())["maxTime"] for b in blocks)
    for b in blocks:
        subprocess.run(["promtool", "tsdb", "analyze", str(tenant_dir), b.name], check=True,
                       capture_output=True)
        meta = json.loads((b / "meta.json").read_text())
        assert meta["thanos"]["source"] == "receive"
        assert meta["thanos"]["labels"] == {"tenant_id": "default-tenant"}
    assert blocks_dump(blocks, tmp_path / "dump") == {
        k: [(t, v) for t, v in pts if t < cut_upto] for k, pts in want.items()}
    assert served(pr2.api, t0 + 4 * HOUR, "5h") == want  # blocks + head: still exactly once
    pr2.stop()
    # The bucket then loses every block (an outage ending with an empty bucket): the shipper's
    # record says shipped, but they are uploaded again before retention may delete them.
    for p in (data / "bucket").iterdir():
        shutil.rmtree(p)
    # Past local retention the shipped blocks leave the ingestor; the store gateway serves them.
    pr3 = promring_up(data, "--tsdb.retention", "1s", *BLOCK_FLAGS)
    deadline = time.monotonic() + 20
    while any((p / "meta.json").exists() for p in tenant_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any((p / "meta.json").exists() for p in tenant_dir.iterdir())
    for b in blocks:
        assert (data / "bucket" / b.name / "meta.json").exists()  # shipped again
    pr3.stop()
    pr3 = promring_up(data, "--tsdb.retention", "1s")  # its store gateway syncs at start
    assert served(pr3.api, t0 + 4 * HOUR, "5h") == want
    out = subprocess.run(promring_cmd() + ["tools", "bucket", "inspect", "--objstore.config-file",
                                           str(_fs_config(tmp_path, data / "bucket"))],
                         check=True, capture_output=True, text=True).stdout
    for b in blocks:
        assert b.name in out
    assert 'tenant_id="default-tenant"' in out and "receive" in out


def _fs_config(tmp_path: Path, bucket: Path) -> Path:
    cfg = tmp_path / "fs-objstore.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    return cfg


def _norm(resp: dict) -> list:
    return sorted((tuple(sorted(s["metric"].items())), s["value"][1]) for s in resp["data"]["result"])


def _openmetrics(series) -> str:
    lines = ["# TYPE om_gauge gauge", "# TYPE om_requests counter"]
    for name, lbls, ts, vals in series:
        for t, v in zip(ts, vals):
            lbl = ",".join(f'{k}="{v_}"' for k, v_ in lbls)
            lines.append(f"{name}{{{lbl}}} {v} {t / 1000:.3f}")
    lines.sort(key=lambda l: float(l.rsplit(" ", 1)[1]) if not l.startswith("#") else -1)
    return "\n".join(lines) + "\n# EOF\n"


def om_series(t0: int, hosts: int, seed: int, job: str = "om") -> list:
    """A gauge and a counter per host over 4h at 30s, for ``_openmetrics``."""
    rng = np.random.default_rng(seed)
    data = []
    for i in range(hosts):
        ts = t0 + np.arange(0, 4 * HOUR, 30_000)
        data.append(("om_gauge", (("instance", f"h{i}"), ("job", job)), ts.tolist(),
                     np.round(rng.normal(50, 10, len(ts)), 2).tolist()))
        data.append(("om_requests_total", (("code", "200" if i % 2 else "500"), ("instance", f"h{i}"), ("job", job)),
                     ts.tolist(), np.cumsum(rng.integers(0, 10, len(ts))).astype(float).tolist()))
    return data


@needs_promtool
def test_prometheus_blocks_served_like_prometheus(tmp_path):
    t0 = (int(time.time() * 1000) // HOUR - 6) * HOUR
    data = om_series(t0, 8, seed=5)
    om = tmp_path / "data.om"
    om.write_text(_openmetrics(data))
    prom_dir = tmp_path / "prom-tsdb"
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(prom_dir)],
                   check=True, capture_output=True)
    bucket = tmp_path / "bucket"
    shutil.copytree(prom_dir, bucket)  # plain Prometheus blocks: no thanos section in meta.json
    procs, api = store_and_query(tmp_path, f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    prom = PrometheusProcess(tmp_path / "prom", "global: {}\n", "--storage.tsdb.retention.time=10y")
    shutil.copytree(prom_dir, tmp_path / "prom" / "tsdb")
    prom.start()
    try:
        t = (t0 + 3 * HOUR + 7_500) / 1000
        for q in ["om_gauge", "rate(om_requests_total[5m])", "sum by (code) (increase(om_requests_total[1h]))",
                  "avg_over_time(om_gauge[30m])", "max(om_gauge) by (job)", "om_gauge offset 1h",
                  "histogram_quantile(0.5, om_gauge)", 'count({job="om"})']:
            theirs = requests.get(f"{prom.api}/query", params={"query": q, "time": t}).json()
            ours = requests.get(f"{api}/query", params={"query": q, "time": t}).json()
            assert ours["status"] == "success", (q, ours)
            o, t_ = _norm(ours), _norm(theirs)
            assert [k for k, _ in o] == [k for k, _ in t_], q
            # Summation order differs between engines (2.42 uses an incremental mean).
            assert all(math.isclose(float(a), float(b), rel_tol=1e-12) for (_, a), (_, b) in zip(o, t_)), q
        params = {"query": "rate(om_requests_total[10m])", "start": (t0 + HOUR) / 1000 + 7.5,
                  "end": (t0 + 3 * HOUR) / 1000, "step": 60}
        theirs = requests.get(f"{prom.api}/query_range", params=params).json()["data"]["result"]
        ours = requests.get(f"{api}/query_range", params=params).json()["data"]["result"]
        o = sorted((tuple(sorted(s["metric"].items())), s["values"]) for s in ours)
        t_ = sorted((tuple(sorted(s["metric"].items())), s["values"]) for s in theirs)
        assert [k for k, _ in o] == [k for k, _ in t_]
        for (_, vo), (_, vt) in zip(o, t_):
            assert [p[0] for p in vo] == [p[0] for p in vt]
            assert all(math.isclose(float(a[1]), float(b[1]), rel_tol=1e-12) for a, b in zip(vo, vt))
    finally:
        prom.stop()
        for p in procs:
            stop_process(p)


def test_blocks_through_s3_reach_the_store_gateway(tmp_path):
    try:
        server = MotoServer().start()
    except MotoNotInstalled as e:
        pytest.skip(f"moto_server is not installed: {e}")
    procs: list[subprocess.Popen] = []
    try:
        server.create_bucket("thanos")
        yaml = (f"type: S3\nconfig:\n  bucket: thanos\n  endpoint: {server.endpoint}\n  insecure: true\n"
                f"  access_key: key\n  secret_key: secret\nprefix: tenant-blocks\n")
        cfg = tmp_path / "s3.yml"
        cfg.write_text(yaml)
        rw, grpc, http = free_port(), free_port(), free_port()
        args = promring_cmd() + ["receive", "--tsdb.path", str(tmp_path / "recv"),
                                 "--objstore.config-file", str(cfg), *BLOCK_FLAGS,
                                 "--remote-write.address", f"127.0.0.1:{rw}",
                                 "--grpc-address", f"127.0.0.1:{grpc}", "--http-address", f"127.0.0.1:{http}",
                                 "--label", 'replica="a"']
        recv = start_process(args, f"http://127.0.0.1:{rw}/-/ready", tmp_path / "recv.log")
        t0 = (int(time.time() * 1000) // HOUR - 1) * HOUR
        series = known_series(t0, n_series=10, n_samples=100)  # 25 minutes: the first range is cut
        push_in_rounds(f"http://127.0.0.1:{rw}/api/v1/receive", series)
        stop_process(recv)  # no flush: the start-up round of the next run cuts and ships
        assert recv.returncode == 0
        recv = start_process(args, f"http://127.0.0.1:{rw}/-/ready", tmp_path / "recv2.log")
        blocks = wait_for_blocks(tmp_path / "recv" / "default-tenant", t0 + 9 * 60_000)
        cut_upto = max(json.loads((b / "meta.json").read_text())["maxTime"] for b in blocks)
        stop_process(recv)  # ships what is cut before it exits
        assert recv.returncode == 0
        procs, api = store_and_query(tmp_path, yaml)
        got = served(api, t0 + 3 * HOUR, "4h")
        want = expected(series)
        assert got == {tuple(sorted(k + (("replica", "a"),))): [p for p in v if p[0] < cut_upto]
                       for k, v in want.items()}
    finally:
        for p in procs:
            stop_process(p)
        server.stop()
