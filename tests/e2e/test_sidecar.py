"""``promring sidecar`` next to Debian's Prometheus 2.42 (the seeds' walkthrough with promring in
place of Thanos): its live data through the querier, its blocks shipped to the bucket and
served by the store gateway after Prometheus's retention dropped them, HA replicas
deduplicated, and a restart that does not upload anything twice."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from harness import (PrometheusProcess, free_port, query_process, sidecar_process,
                     store_process)

# Prometheus cuts a block every 5s of data (min = max, as a sidecar requires) so that blocks
# appear within seconds; Thanos only warns that the block duration is not 2h.
BLOCKS_5S = ("--storage.tsdb.min-block-duration=5s", "--storage.tsdb.max-block-duration=5s")
QUERY = "sum by (status) (request_count_total)"


class DemoApp:
    """The walkthrough's small app: ``request_count_total{status=...}``, growing per scrape."""

    def __init__(self) -> None:
        self.counts = {"200": 0, "500": 0}
        self.lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with app.lock:
                    app.counts["200"] += 3
                    app.counts["500"] += 1
                    body = "".join(f'request_count_total{{status="{s}"}} {n}\n'
                                   for s, n in app.counts.items())
                data = ("# TYPE request_count_total counter\n" + body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prometheus_config(app: DemoApp, **external: str) -> str:
    ext = "".join(f'    {k}: "{v}"\n' for k, v in external.items())
    return (f"global:\n  scrape_interval: 1s\n  external_labels:\n{ext}"
            f"scrape_configs:\n  - job_name: demo\n    static_configs:\n"
            f"      - targets: ['{app.address}']\n")


def bucket_config(tmp_path: Path) -> Path:
    (tmp_path / "bucket").mkdir(exist_ok=True)
    cfg = tmp_path / "objstore.yml"
    cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    return cfg


def shipped_metas(bucket: Path) -> dict[str, dict]:
    return {m.parent.name: json.loads(m.read_text()) for m in bucket.glob("*/meta.json")}


def wait_for(what: str, check, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        time.sleep(0.25)


def range_answer(api: str, start: float, end: float, **extra) -> dict:
    r = requests.get(f"{api}/query_range", params={"query": QUERY, "start": start, "end": end,
                                                   "step": "1s", **extra}, timeout=30)
    assert r.status_code == 200, r.text
    return {json.dumps(s["metric"], sort_keys=True): s["values"]
            for s in r.json()["data"]["result"]}


def lowest_timestamp_s(prom: PrometheusProcess) -> float:
    text = requests.get(f"http://127.0.0.1:{prom.port}/metrics", timeout=5).text
    return float(re.search(r"^prometheus_tsdb_lowest_timestamp_seconds (\S+)$", text, re.M)[1])


@pytest.fixture
def demo_app():
    app = DemoApp()
    yield app
    app.close()


def _stop_all(*procs) -> None:
    for p in procs:
        if p is not None:
            p.stop()


def test_walkthrough_live_data_then_store_gateway_after_retention(tmp_path, demo_app):
    prom = PrometheusProcess(tmp_path / "prom", prometheus_config(demo_app, cluster="demo"),
                             *BLOCKS_5S, "--storage.tsdb.retention.time=6s")
    sidecar = store = query = None
    try:
        prom.start()
        objstore = bucket_config(tmp_path)
        sidecar = sidecar_process(tmp_path, "sidecar", f"http://127.0.0.1:{prom.port}",
                                  prom.dir / "tsdb", f"--objstore.config-file={objstore}").start()
        store = store_process(tmp_path, "store", objstore, "--sync-block-duration=1s").start()
        query = query_process(tmp_path, "query", [sidecar.grpc, store.grpc]).start()
        api = query.url("http", "/api/v1")

        # Live data: the last seconds of scrapes (in Prometheus's head, which keeps at least
        # 1.5 block ranges, so served by the sidecar) answered exactly as Prometheus answers.
        first = wait_for("first scrapes", lambda: range_answer(prom.api, time.time() - 60,
                                                               time.time()))
        assert set(first) == {'{"status": "200"}', '{"status": "500"}'}

        def four_seconds_scraped():  # bounded wait: the first scrape may be a second old only
            end = float(int(time.time()) - 1)
            got = range_answer(prom.api, end - 4, end)
            return (end - 4, end, got) if got and all(len(v) >= 4 for v in got.values()) else None
        start, end, theirs = wait_for("4 s of scrapes", four_seconds_scraped)
        assert range_answer(api, start, end) == theirs

        # Prometheus cuts blocks; each is shipped with the thanos meta section. Once
        # retention dropped every block holding [start, end] Prometheus itself has nothing
        # there any more -- and the querier still answers, from the store gateway.
        wait_for("Prometheus dropped the range", lambda: lowest_timestamp_s(prom) > end + 1,
                 timeout=45)
        metas = shipped_metas(tmp_path / "bucket")
        first = min(t for v in theirs.values() for t, _ in v)  # a sample is at or before it
        assert metas and any(m["minTime"] <= first * 1000 for m in metas.values())
        for m in metas.values():
            assert m["thanos"]["labels"] == {"cluster": "demo"}
            assert m["thanos"]["source"] == "sidecar"
            assert m["thanos"]["downsample"] == {"resolution": 0}
        assert range_answer(prom.api, start, end) == {}
        wait_for("store gateway synced", lambda: range_answer(api, start, end) == theirs,
                 timeout=15)
        # Recent data still comes live from the sidecar, in agreement with Prometheus.
        now = float(int(time.time()) - 1)
        assert range_answer(api, now - 3, now) == range_answer(prom.api, now - 3, now)
    finally:
        _stop_all(query, store, sidecar, prom)


def test_ha_replicas_are_deduplicated(tmp_path, demo_app):
    proms, sidecars, query = [], [], None
    try:
        for replica in ("0", "1"):
            p = PrometheusProcess(tmp_path / f"prom{replica}",
                                  prometheus_config(demo_app, cluster="demo", replica=replica))
            proms.append(p.start())
            sidecars.append(sidecar_process(tmp_path, f"sidecar{replica}",
                                            f"http://127.0.0.1:{p.port}", p.dir / "tsdb",
                                            "--prometheus.get_config_interval=1s").start())
        query = query_process(tmp_path, "query", [s.grpc for s in sidecars],
                              "--query.replica-label=replica").start()
        api = query.url("http", "/api/v1")

        def series(**extra) -> list[dict]:
            r = requests.get(f"{api}/query", params={"query": "request_count_total", **extra},
                             timeout=30)
            assert r.status_code == 200, r.text
            return sorted((s["metric"] for s in r.json()["data"]["result"]),
                          key=lambda m: json.dumps(m, sort_keys=True))

        raw = wait_for("both replicas scraped", lambda: len(series(dedup="false")) == 4 and
                       series(dedup="false"))
        assert {m["replica"] for m in raw} == {"0", "1"}
        assert series() == [{"__name__": "request_count_total", "cluster": "demo",
                             "instance": demo_app.address, "job": "demo", "status": s}
                            for s in ("200", "500")]

        # Replica 1's Prometheus goes away: its sidecar's heartbeat fails and it is not ready.
        proms[1].stop()
        wait_for("sidecar 1 not ready", lambda: requests.get(
            sidecars[1].url("http", "/-/ready"), timeout=5).status_code == 503, timeout=15)
        metrics = requests.get(sidecars[1].url("http", "/metrics"), timeout=5).text
        assert re.search(r"^thanos_sidecar_prometheus_up 0\.0$", metrics, re.M)
        assert requests.get(sidecars[1].url("http", "/-/healthy"), timeout=5).status_code == 200
        assert requests.get(sidecars[0].url("http", "/-/ready"), timeout=5).status_code == 200
        # ...and the querier still answers from replica 0 (partial response, with a warning).
        r = requests.get(f"{api}/query", params={"query": "request_count_total"}, timeout=30)
        assert r.status_code == 200, r.text
        assert sorted(s["metric"]["status"] for s in r.json()["data"]["result"]) == ["200", "500"]
        assert r.json().get("warnings")
    finally:
        _stop_all(query, *sidecars, *proms)


def test_restart_does_not_upload_blocks_twice(tmp_path, demo_app):
    prom = PrometheusProcess(tmp_path / "prom", prometheus_config(demo_app, cluster="demo"),
                             *BLOCKS_5S)
    sidecar = None
    try:
        prom.start()
        objstore = bucket_config(tmp_path)
        sidecar = sidecar_process(tmp_path, "sidecar", f"http://127.0.0.1:{prom.port}",
                                  prom.dir / "tsdb", f"--objstore.config-file={objstore}").start()
        bucket = tmp_path / "bucket"
        wait_for("a shipped block", lambda: shipped_metas(bucket))
        sidecar.stop()
        before = {p.relative_to(bucket): p.stat().st_mtime_ns for p in bucket.rglob("*")
                  if p.is_file()}
        state = json.loads((prom.dir / "tsdb" / "thanos.shipper.json").read_text())
        assert sorted(state["uploaded"]) == sorted({p.parts[0] for p in before})
        wait_for("a block cut while the sidecar was down",
                 lambda: {b.parent.name for b in (prom.dir / "tsdb").glob("*/meta.json")}
                 - set(state["uploaded"]), timeout=20)

        sidecar.start()
        local = {b.parent.name for b in (prom.dir / "tsdb").glob("*/meta.json")}
        wait_for("the missed block shipped", lambda: local <= set(shipped_metas(bucket)))
        after = {p.relative_to(bucket): p.stat().st_mtime_ns for p in bucket.rglob("*")
                 if p.is_file()}
        assert {k: after[k] for k in before} == before  # nothing shipped before was rewritten
        text = requests.get(sidecar.url("http", "/metrics"), timeout=5).text
        uploads = float(re.search(r"^thanos_shipper_uploads_total\S* (\S+)$", text, re.M)[1])
        new = set(shipped_metas(bucket)) - {p.parts[0] for p in before}
        assert 1 <= uploads <= len(new)  # only blocks cut since (more may have come by now)
    finally:
        _stop_all(sidecar, prom)


def test_storeapi_external_label_matchers_and_reloader(tmp_path, demo_app, monkeypatch):
    """Thanos's rules for matchers on external labels, the Info label set, and the reloader:
    a changed config template is env-substituted into Prometheus's config file, Prometheus is
    reloaded and its new external labels served."""
    import asyncio

    import grpc

    from receiver.tsdb import chunkenc
    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi.client import StoreClient

    prom = PrometheusProcess(tmp_path / "prom", prometheus_config(demo_app, cluster="demo"),
                             "--web.enable-lifecycle")
    sidecar = None
    try:
        prom.start()
        template = prom.dir / "prometheus.yml.tmpl"
        rules = tmp_path / "rules"
        rules.mkdir()
        with_rules = f"rule_files: ['{rules}/*.yml']\n"
        template.write_text(prometheus_config(demo_app, cluster="$(SC_CLUSTER)") + with_rules)
        monkeypatch.setenv("SC_CLUSTER", "demo")  # inherited by the sidecar process
        sidecar = sidecar_process(tmp_path, "sidecar", f"http://127.0.0.1:{prom.port}",
                                  prom.dir / "tsdb", f"--reloader.config-file={template}",
                                  "--reloader.config-envsubst-file="
                                  f"{prom.dir / 'prometheus.yml'}", f"--reloader.rule-dir={rules}",
                                  "--prometheus.get_config_interval=1s").start()
        name = Matcher(MatchType.EQ, "__name__", "request_count_total")

        async def ask(*matchers: Matcher):
            client = StoreClient(sidecar.grpc)
            try:
                return await client.info(), await client.series(0, 1 << 62, list(matchers))
            finally:
                await client.close()

        info, got = asyncio.run(ask(name, Matcher(MatchType.EQ, "cluster", "other")))
        assert info.label_sets == [(("cluster", "demo"),)]
        assert info.component_type == "sidecar" and info.max_time == (1 << 63) - 1
        assert got == []  # an external label that does not match: nothing, Prometheus not asked
        with pytest.raises(grpc.aio.AioRpcError) as e:
            asyncio.run(ask(Matcher(MatchType.RE, "cluster", "de.*")))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no matchers specified (excluding external labels)" in e.value.details()

        wait_for("scrapes", lambda: len(asyncio.run(ask(name))[1]) == 2)
        _, got = asyncio.run(ask(name, Matcher(MatchType.EQ, "cluster", "demo")))
        assert [dict(s.labels)["status"] for s in got] == ["200", "500"]
        for s in got:
            assert dict(s.labels)["cluster"] == "demo"
            ts, vals = chunkenc.decode_many([c[2] for c in s.chunks], 0, 1 << 62)
            r = requests.get(f"{prom.api}/query", params={
                "query": f'request_count_total{{status="{dict(s.labels)["status"]}"}}',
                "time": ts[-1] / 1000}, timeout=10).json()
            assert float(r["data"]["result"][0]["value"][1]) == vals[-1]

        async def labels():
            client = StoreClient(sidecar.grpc)
            now = int(time.time() * 1000)
            try:
                return (await client.label_names(now - 60_000, now, [name]),
                        await client.label_values("status", now - 60_000, now, [name]),
                        await client.label_values("cluster", now - 60_000, now, [name]),
                        await client.label_values(
                            "cluster", now - 60_000, now,
                            [Matcher(MatchType.EQ, "__name__", "no_such_metric")]))
            finally:
                await client.close()
        assert asyncio.run(labels()) == (["__name__", "cluster", "instance", "job", "status"],
                                         ["200", "500"], ["demo"], [])

        template.write_text(prometheus_config(demo_app, cluster="$(SC_CLUSTER)2") + with_rules)
        wait_for("Prometheus reloaded", lambda: "demo2" in requests.get(
            f"{prom.api}/status/config", timeout=5).json()["data"]["yaml"], timeout=20)
        wait_for("new external labels served",
                 lambda: asyncio.run(ask(name))[0].label_sets == [(("cluster", "demo2"),)],
                 timeout=20)

        # A new file in a watched rule directory: Prometheus is reloaded and loads it.
        (rules / "r.yml").write_text("groups:\n  - name: g\n    rules:\n"
                                     "      - record: errors:sum\n"
                                     "        expr: sum(request_count_total{status='500'})\n")
        wait_for("rule loaded", lambda: requests.get(f"{prom.api}/rules", timeout=5).json()
                 ["data"]["groups"], timeout=20)
    finally:
        _stop_all(sidecar, prom)


def test_refuses_prometheus_without_external_labels_or_with_compaction(tmp_path, demo_app):
    """As Thanos: no external labels -> exit 1; with a bucket, a Prometheus whose min and max
    block durations differ (it would compact blocks already shipped) -> never ready."""
    prom = PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1s\n")
    unready = None
    try:
        prom.start()
        url = f"http://127.0.0.1:{prom.port}"
        lone = sidecar_process(tmp_path, "lone", url, prom.dir / "tsdb")
        lone.ready_urls = []
        lone.start()
        assert lone.proc.wait(30) == 1
        assert "no external labels configured on Prometheus server" in lone.log_text()

        unready = sidecar_process(tmp_path, "unready", url, prom.dir / "tsdb",
                                  f"--objstore.config-file={bucket_config(tmp_path)}",
                                  "--prometheus.get_config_interval=1s")
        unready.ready_urls = []
        unready.start()
        wait_for("the refusal", lambda: "Compaction needs to be disabled" in unready.log_text())
        r = requests.get(unready.url("http", "/-/ready"), timeout=5)
        assert r.status_code == 503
        assert unready.proc.poll() is None
    finally:
        _stop_all(unready, prom)


def test_thanos_command_line_and_thanos_querier(tmp_path, demo_app):
    """The same ``sidecar`` command line runs as Thanos v0.42.4 and as promring; Thanos's own
    querier answers the same through either sidecar."""
    import shlex

    from harness import ServerProcess, promring_cmd
    from peers import peer

    prom = PrometheusProcess(tmp_path / "prom", prometheus_config(demo_app, cluster="demo"))
    procs: list[ServerProcess] = []
    try:
        prom.start()
        apis = []
        for name, cmd in (("promring", None), ("thanos", [peer("thanos")])):
            g, h, qg, qh = (free_port() for _ in range(4))
            line = (f"sidecar --prometheus.url http://127.0.0.1:{prom.port} "
                    f"--tsdb.path {prom.dir / 'tsdb'} --grpc-address 127.0.0.1:{g} "
                    f"--http-address 127.0.0.1:{h} --min-time=-1h "
                    f"--prometheus.get_config_interval 5s")
            sc = ServerProcess((cmd or promring_cmd()) + shlex.split(line), tmp_path,
                               f"{name}-sidecar", {"http": h},
                               [f"http://127.0.0.1:{h}/-/ready"])
            procs.append(sc.start())
            q = ServerProcess([peer("thanos"), "query", f"--endpoint=127.0.0.1:{g}",
                               f"--grpc-address=127.0.0.1:{qg}", f"--http-address=127.0.0.1:{qh}"],
                              tmp_path, f"{name}-query", {"http": qh},
                              [f"http://127.0.0.1:{qh}/-/ready"])
            procs.append(q.start())
            apis.append(q.url("http", "/api/v1"))
        wait_for("scrapes", lambda: len(range_answer(prom.api, time.time() - 60,
                                                     time.time())) == 2)
        time.sleep(3)
        end = float(int(time.time()) - 1)

        def answers():
            return [range_answer(api, end - 5, end) for api in (*apis, prom.api)]
        ours, thanos, prometheus = wait_for(
            "both sidecars serving", lambda: all(answers()) and answers(), timeout=30)
        assert ours == thanos == prometheus
    finally:
        _stop_all(*reversed(procs), prom)


def test_every_sidecar_flag_is_thanos_sidecars_with_its_default():
    """Each flag of ``promring sidecar`` is a flag of ``thanos sidecar`` v0.42.4 (help-long,
    hidden flags included) and, where Thanos shows a default, the same default."""
    import argparse
    import subprocess

    from peers import peer
    from promring.cli import build_parser

    text = subprocess.run([peer("thanos"), "sidecar", "--help-long"], capture_output=True,
                          text=True, timeout=30).stdout
    hidden = {"--shipper.ignore-unequal-block-size"}  # Thanos hides it from help
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for act in sub.choices["sidecar"]._actions:
        flag = next((o for o in act.option_strings if o.startswith("--")), None)
        if flag in (None, "--help", "--version") or flag in hidden:
            continue
        m = re.search(r"^\s+--(?:\[no-\])?" + re.escape(flag[2:]) + r"(?:=(\S*))?\s", text,
                      re.M)
        assert m, f"{flag} is not a thanos sidecar flag"
        if isinstance(act.default, str):  # kingpin shows the default as --flag=default
            assert (m.group(1) or "").strip('"') == act.default, flag
        checked += 1
    assert checked >= 20


def test_native_histogram_chunks_pass_through(tmp_path):
    """Native histograms remote-written into Prometheus 2.42 come out of the sidecar as their
    histogram chunks (Chunk.type HISTOGRAM / FLOAT_HISTOGRAM) and the querier answers as
    Prometheus does."""
    from test_native_histograms_e2e import STEP, _close, push, q

    prom = PrometheusProcess(tmp_path / "prom",
                             'global:\n  scrape_interval: 1h\n  external_labels:\n'
                             '    cluster: "nh"\n', "--enable-feature=native-histograms",
                             "--web.enable-remote-write-receiver")
    sidecar = query = None
    try:
        prom.start()
        t0 = int(time.time() * 1000) - 30 * STEP
        push(prom.api.replace("/api/v1", "/api/v1/write"), t0, 0, 30)
        sidecar = sidecar_process(tmp_path, "sidecar", f"http://127.0.0.1:{prom.port}",
                                  prom.dir / "tsdb").start()
        query = query_process(tmp_path, "query", [sidecar.grpc]).start()
        api = query.url("http", "/api/v1")
        t = (t0 + 29 * STEP + 7000) / 1000
        for expr in ("h", "hf", "histogram_count(h)", "histogram_sum(hf)",
                     "histogram_fraction(0, 2, h)", "h[1m]"):
            theirs = q(prom.api, expr, t)
            assert theirs, expr
            ours = wait_for(expr, lambda: q(api, expr, t), timeout=10)
            for s in ours:  # the store's external label, which Prometheus's own answer lacks
                assert s["metric"].pop("cluster", "nh") == "nh"
            assert _close(ours, theirs), (expr, ours, theirs)
    finally:
        _stop_all(query, sidecar, prom)
