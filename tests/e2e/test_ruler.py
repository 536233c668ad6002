"""``promring rule`` with real parts: Debian's Prometheus 2.42 (the reference evaluation of the
same rule file over the same data), Debian's Alertmanager (receives the alerts), ``promring up``
(data and, in stateless mode, the results) and ``promring query`` (stateful mode's StoreAPI and
the Rules API)."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from harness import (PrometheusProcess, PromringProcess, alertmanager_process, free_port,
                     query_process, rule_process, self_scrape_remote_write)
from rw import push, raw_samples

# Both evaluate this file (same absolute path, so the same group hash and offset). The
# expressions look 5s back so that both see the same samples although promring receives them
# by remote write a moment after Prometheus scraped them. (irate, not rate: rate's extrapolation
# of young counters changed after Prometheus 2.42, and promring's PromQL follows Prometheus 3.)
RECORDING_RULES = """groups:
  - name: recording
    interval: 1s
    rules:
      - record: rec_samples
        expr: sum by (job) (prometheus_tsdb_head_samples_appended_total offset 5s)
      - record: rec_rate
        expr: sum by (job) (irate(prometheus_http_requests_total[10s] offset 5s))
        labels:
          kind: rate
"""

# An alert whose annotation runs the template functions over a value with many digits: Prometheus
# 2.42 and the ruler must expand it to the same text (Go's number formats included).
TEMPLATE_RULES = """  - name: templates
    interval: 1s
    rules:
      - alert: Templated
        expr: prometheus_build_info * 1234567.891
        annotations:
          summary: >-
            {{ $labels.job }} {{ $value }} {{ $value | humanize }} {{ humanize1024 $value }}
            {{ printf "%.2f|%d|%s|%q|%5.1f|%v" $value 42 $labels.job "x" 3.14159 0.5 }}
            {{ humanizeDuration 3661.5 }} {{ humanizeDuration 0.0123 }} {{ humanizeDuration 45 }}
            {{ humanizePercentage 0.123456 }} {{ humanizeTimestamp $value }}
            {{ $labels.job | toUpper }} {{ title "hello world" }}
            {{ if gt $value 1e6 }}big{{ else if gt $value 1.0 }}mid{{ else }}small{{ end }}
            {{ reReplaceAll "(p)rom(.*)" "$1-$2" $labels.job }} {{ humanize 0.0001234 }}
            {{ 1.5e-7 }} {{ 100000000.0 }} {{ len $labels.job }} {{ $labels.nothing }}|
            {{ with $labels.job }}{{ . }}{{ end }} {{ index $labels "job" }} {{ match "^pro" $labels.job }}
"""

def _prometheus_config(url: str, rules: Path | None = None) -> str:
    """Prometheus scraping itself into promring, its own rule results kept out of promring."""
    cfg = yaml.safe_load(self_scrape_remote_write(url))
    cfg["remote_write"][0]["write_relabel_configs"] = [
        {"source_labels": ["__name__"], "regex": "rec_.*|ALERTS.*", "action": "drop"}]
    if rules is not None:
        cfg["rule_files"] = [str(rules)]
    return yaml.safe_dump(cfg, sort_keys=False)


def _wait(what: str, check, timeout: float = 45.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, KeyError, IndexError, ValueError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def _remote_write_config(url: str) -> str:
    return f"remote_write:\n  - url: {url}\n"


@pytest.fixture
def up(tmp_path: Path):
    p = PromringProcess.up(tmp_path / "up")
    yield p
    p.stop()


class Gauge:
    """Pushes ``test_gauge{instance="i1"}`` with the current value every 0.3s."""

    def __init__(self, url: str, value: float) -> None:
        self.url, self.value = url, value
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = int(time.time() * 1000)
            try:
                push(self.url, [((("__name__", "test_gauge"), ("instance", "i1")), [now],
                                 [self.value])], timeout=5)
            except requests.RequestException:
                pass
            self._stop.wait(0.3)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)


def test_recorded_series_equal_prometheus_at_the_same_timestamps(tmp_path: Path, up):
    rules = tmp_path / "rules.yml"
    rules.write_text(RECORDING_RULES + TEMPLATE_RULES)
    prom = PrometheusProcess(tmp_path / "prom",
                             _prometheus_config(up.write_url, rules.resolve())).start()
    ruler = rule_process(tmp_path, "ruler", f"--rule-file={rules.resolve()}",
                         f"--query=127.0.0.1:{up.http_port}", '--label=ruler="promring"',
                         f"--remote-write.config={_remote_write_config(up.write_url)}")
    try:
        ruler.start()
        started = time.time()
        prom_api = f"http://127.0.0.1:{prom.port}/api/v1"
        # Stateless mode: the results are in the receiver (tenant label added by it).
        sel = '{__name__=~"rec_.*",ruler="promring"}'
        _wait("ten recorded evaluations in promring", lambda: sum(
            len(v) for v in raw_samples(up.api, sel, time.time(), "60s").values()) >= 20)
        t = time.time() - 2
        ours = raw_samples(up.api, sel, t, "60s")
        theirs = raw_samples(prom_api, '{__name__=~"rec_.*"}', t, "60s")
        our_alerts = requests.get(ruler.url("http", "/api/v1/alerts"), timeout=5).json()
        their_alerts = requests.get(f"{prom_api}/alerts", timeout=5).json()
        our_firing = raw_samples(up.api, 'ALERTS{alertname="Templated"}', t, "60s")
        their_firing = raw_samples(prom_api, 'ALERTS{alertname="Templated"}', t, "60s")
        our_rules = requests.get(ruler.url("http", "/api/v1/rules"), timeout=5).json()
        their_rules = requests.get(f"{prom_api}/rules", timeout=5).json()
    finally:
        ruler.stop()
        prom.stop()
    assert set(theirs) == {tuple(sorted((k, v) for k, v in key if k not in ("ruler", "tenant_id")))
                           for key in ours} and len(ours) == 2
    compared = 0
    for key, samples in ours.items():
        mine = dict(samples)
        ref = dict(theirs[tuple((k, v) for k, v in key if k not in ("ruler", "tenant_id"))])
        # Evaluations once the 5s-old data of both had settled (a few after the ruler started).
        settled = [ts for ts in mine if ts > started + 8]
        assert settled, mine
        for ts in settled:
            assert ts in ref, f"{key}: ruler evaluated at {ts}, Prometheus at {sorted(ref)[-5:]}"
            assert float(mine[ts]) == pytest.approx(float(ref[ts]), rel=1e-9), (key, ts)
            compared += 1
    assert compared >= 6
    ours_text = [a["annotations"]["summary"] for a in our_alerts["data"]["alerts"]]
    theirs_text = [a["annotations"]["summary"] for a in their_alerts["data"]["alerts"]]
    assert ours_text == theirs_text and len(ours_text) == 1
    # ALERTS: the same series (but the external labels) at the same evaluation timestamps
    [(our_key, our_pts)] = our_firing.items()
    [(their_key, their_pts)] = their_firing.items()
    assert {k: v for k, v in our_key if k not in ("ruler", "tenant_id")} == dict(their_key)
    settled = [p for p in our_pts if p[0] > started + 8]
    assert settled and set(settled) <= set(their_pts)
    # /api/v1/rules in Prometheus's shape (Thanos adds partialResponseStrategy)
    assert _rules_shape(our_rules, extra={"partialResponseStrategy"}) == _rules_shape(their_rules)


def _rules_shape(doc: dict, extra: set[str] = frozenset()) -> list:
    """Keys and the static values of groups, rules and alerts. (Thanos, and so promring, always
    has a recording rule's labels, {} when it has none; Prometheus leaves the key out.)"""
    def keys(d: dict) -> list[str]:
        return sorted(set(d) - extra)
    out = []
    for g in doc["data"]["groups"]:
        out.append((keys(g), g["name"], g["interval"], g["limit"]))
        for r in g["rules"]:
            if r["type"] == "recording" and r.get("labels") == {}:
                del r["labels"]
            static = {k: r.get(k) for k in ("name", "query", "labels", "annotations", "duration",
                                            "keepFiringFor", "type", "health", "state")}
            out.append((keys(r), static, [keys(a) for a in r.get("alerts", [])]))
    return out


ALERT_RULES = """groups:
  - name: alerts
    rules:
      - alert: GaugeHigh
        expr: test_gauge > 5
        for: 4s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} is at {{ $value }} ({{ $externalLabels.ruler }})"
"""


def test_alert_fires_and_resolves_at_alertmanager(tmp_path: Path, up):
    rules = tmp_path / "alerts.yml"
    rules.write_text(ALERT_RULES)
    am = alertmanager_process(tmp_path).start()
    gauge = Gauge(up.write_url, 10.0)
    ruler = rule_process(tmp_path, "ruler", f"--rule-file={rules}", "--eval-interval=1s",
                         f"--query=127.0.0.1:{up.http_port}", '--label=ruler="r1"',
                         f"--alertmanagers.url=http://127.0.0.1:{am.ports['http']}",
                         "--resend-delay=1m", "--alert.query-url=http://query.example",
                         f"--remote-write.config={_remote_write_config(up.write_url)}")
    try:
        ruler.start()
        am_api = f"http://127.0.0.1:{am.ports['http']}/api/v2"

        def received():
            return [a for a in requests.get(f"{am_api}/alerts", timeout=5).json()
                    if a["labels"].get("alertname") == "GaugeHigh"]
        got = _wait("the firing alert at Alertmanager", received)[0]
        assert got["labels"] == {"alertname": "GaugeHigh", "instance": "i1", "severity": "page",
                                 "ruler": "r1", "tenant_id": "default-tenant"}
        assert got["annotations"] == {"summary": "i1 is at 10 (r1)"}
        assert got["generatorURL"].startswith("http://query.example/graph?g0.expr=test_gauge")
        alerts = requests.get(ruler.url("http", "/api/v1/alerts"), timeout=5).json()["data"]
        assert [(a["state"], a["value"], a["labels"]["alertname"]) for a in alerts["alerts"]] == [
            ("firing", "1e+01", "GaugeHigh")]
        rule = requests.get(ruler.url("http", "/api/v1/rules"), timeout=5).json()[
            "data"]["groups"][0]["rules"][0]
        assert (rule["state"], rule["type"], rule["duration"], rule["health"]) == (
            "firing", "alerting", 4.0, "ok")
        gauge.value = 0.0

        def resolved():
            m = requests.get(f"http://127.0.0.1:{am.ports['http']}/metrics", timeout=5).text
            n = sum(float(line.rsplit(" ", 1)[1]) for line in m.splitlines()
                    if line.startswith('alertmanager_alerts_received_total{status="resolved"'))
            return n >= 1 and not received()
        # --resend-delay=1m keeps a firing alert valid for 4 minutes: it is gone this soon only
        # because the resolved notification arrived.
        _wait("the resolved notification at Alertmanager", resolved)
        # pending from the first evaluation after the for-state restore (Prometheus writes no
        # ALERTS before it), then firing
        states = raw_samples(up.api, 'ALERTS{alertname="GaugeHigh"}', time.time(), "2m")
        assert {dict(k)["alertstate"] for k in states} == {"pending", "firing"}
    finally:
        gauge.stop()
        ruler.stop()
        am.stop()


def test_restart_keeps_the_for_state(tmp_path: Path, up):
    rules = tmp_path / "slow.yml"
    rules.write_text(ALERT_RULES.replace("for: 4s", "for: 10m"))
    gauge = Gauge(up.write_url, 10.0)
    args = (f"--rule-file={rules}", "--eval-interval=1s", f"--query=127.0.0.1:{up.http_port}",
            "--for-grace-period=1s",
            f"--remote-write.config={_remote_write_config(up.write_url)}")
    ruler = rule_process(tmp_path, "ruler", *args)

    def active_at() -> float | None:
        alerts = requests.get(ruler.url("http", "/api/v1/alerts"), timeout=5).json()[
            "data"]["alerts"]
        if [a["state"] for a in alerts] != ["pending"]:
            return None
        return _rfc3339(alerts[0]["activeAt"])
    try:
        ruler.start()
        first = _wait("the pending alert", active_at)
        _wait("ALERTS_FOR_STATE in promring", lambda: raw_samples(
            up.api, "ALERTS_FOR_STATE", time.time(), "1m"))
        time.sleep(12)  # pending for a while (longer than the ruler takes to restart)
        ruler.stop()
        restarted = time.time()
        ruler.start()
        # The first evaluations make a new pending alert; the one after them restores it.
        restored = _wait("the restored for-state", lambda: (lambda t: t if t and t < restarted
                                                           else None)(active_at()), timeout=30)
    finally:
        gauge.stop()
        ruler.stop()
    # Restored: the alert's pending time before the restart counts (its activeAt moves only by
    # the outage, a few seconds), instead of starting again after the restart.
    assert first < restored < restarted


def _rfc3339(s: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def test_stateful_results_through_the_querier_and_its_rules_api(tmp_path: Path):
    rules = tmp_path / "both.yml"
    rules.write_text(RECORDING_RULES.replace("offset 5s", "") + ALERT_RULES.replace(
        "groups:\n", ""))
    bucket = tmp_path / "bucket"
    data = PromringProcess.up(tmp_path / "up", "--grpc-address=127.0.0.1:0")
    gauge = Gauge(data.write_url, 10.0)
    prom = PrometheusProcess(tmp_path / "prom", _prometheus_config(data.write_url)).start()
    ruler = rule_process(tmp_path, "ruler", f"--rule-file={rules}", "--eval-interval=1s",
                         f"--query=127.0.0.1:{data.http_port}", '--label=ruler="stateful"',
                         f"--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    query = None
    try:
        ruler.start()
        ingestor = _wait("the ingestor's gRPC port", lambda: next(
            (s["name"] for s in requests.get(f"{data.api}/stores", timeout=5).json()[
                "data"].get("receive", [])), None))
        query = query_process(tmp_path, "query", [ingestor, ruler.grpc]).start()
        q_api = query.url("http", "/api/v1")
        _wait("the ruler's results through the querier", lambda: raw_samples(
            q_api, '{__name__="rec_samples",ruler="stateful"}', time.time(), "30s"))
        groups = _wait("the ruler's groups at the querier", lambda: requests.get(
            f"{q_api}/rules", timeout=5).json()["data"]["groups"])
        assert sorted(g["name"] for g in groups) == ["alerts", "recording"]
        rec = next(g for g in groups if g["name"] == "recording")
        assert [(r["name"], r["type"]) for r in rec["rules"]] == [  # sorted, as Thanos does
            ("rec_rate", "recording"), ("rec_samples", "recording")]
        alerts = _wait("the firing alert at the querier", lambda: [
            a for a in requests.get(f"{q_api}/alerts", timeout=5).json()["data"]["alerts"]
            if a["state"] == "firing"])
        assert alerts[0]["labels"]["alertname"] == "GaugeHigh"
        only_alerts = requests.get(f"{q_api}/rules", params={"type": "alert"}, timeout=5).json()
        assert [g["name"] for g in only_alerts["data"]["groups"]] == ["alerts"]
    finally:
        gauge.stop()
        if query is not None:
            query.stop()
        ruler.stop()
        prom.stop()
        data.stop()


CONSTANT_RULES = """groups:
  - name: constant
    interval: 1s
    rules:
      - record: one
        expr: vector(1)
        labels: {source: rule}
      - alert: Always
        expr: vector(3) > 2
        labels: {severity: info}
        annotations: {summary: "value {{ $value }}"}
"""


def _normalized(groups: list[dict]) -> list[dict]:
    """Evaluation times differ between two reads; the rest must not."""
    out = []
    for g in groups:
        g = {k: v for k, v in g.items() if k not in ("evaluationTime", "lastEvaluation")}
        g["rules"] = [{k: v for k, v in r.items() if k not in ("evaluationTime", "lastEvaluation")}
                      for r in g["rules"]]
        out.append(g)
    return out


def test_thanos_querier_lists_the_rulers_rules_like_promring_query(tmp_path: Path):
    from test_thanos_interop import thanos
    rules = tmp_path / "constant.yml"
    rules.write_text(CONSTANT_RULES)
    evaluator = query_process(tmp_path, "evaluator", []).start()  # vector(1) needs no data
    ruler = rule_process(tmp_path, "ruler", f"--rule-file={rules}",
                         f"--query=127.0.0.1:{evaluator.ports['http']}", '--label=ruler="x"')
    procs = [evaluator, ruler]
    try:
        ruler.start()
        _wait("the alert firing", lambda: requests.get(ruler.url("http", "/api/v1/alerts"),
                                                      timeout=5).json()["data"]["alerts"])
        ours = query_process(tmp_path, "ours", [ruler.grpc]).start()
        procs.append(ours)
        theirs = thanos(tmp_path, "thanos-query", "query", f"--endpoint={ruler.grpc}").start(120)
        procs.append(theirs)
        answers = {}
        for name, p in (("ours", ours), ("thanos", theirs)):
            answers[name] = _wait(f"rules at {name}", lambda p=p: requests.get(
                p.url("http", "/api/v1/rules"), timeout=5).json()["data"]["groups"])
            answers[name + "_alerts"] = requests.get(p.url("http", "/api/v1/alerts"),
                                                     timeout=5).json()["data"]["alerts"]
    finally:
        for p in reversed(procs):
            p.stop()
    assert _normalized(answers["ours"]) == _normalized(answers["thanos"])
    assert answers["ours_alerts"] == answers["thanos_alerts"]
    alert = answers["ours_alerts"][0]
    assert (alert["labels"], alert["annotations"], alert["state"], alert["value"]) == (
        {"alertname": "Always", "severity": "info"}, {"summary": "value 3"}, "firing", "3e+00")
    rec = answers["ours"][0]["rules"][1]  # alerting rules first, as Thanos sorts them
    assert (rec["name"], rec["type"], rec["labels"], rec["health"]) == (
        "one", "recording", {"source": "rule"}, "ok")


def test_querier_ui_alerts_and_rules_pages(tmp_path: Path):
    import asyncio

    from cdp import CHROMIUM, Browser
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (scripts/test.sh installs it)")
    rules = tmp_path / "constant.yml"
    rules.write_text(CONSTANT_RULES)
    evaluator = query_process(tmp_path, "evaluator", []).start()
    sd = tmp_path / "queriers.yml"  # the querier found by file SD instead of --query
    sd.write_text(f"- targets: ['127.0.0.1:{evaluator.ports['http']}']\n")
    ruler = rule_process(tmp_path, "ruler", f"--rule-file={rules}",
                         f"--query.sd-files={tmp_path / 'queriers.*'}")
    procs = [evaluator, ruler]
    try:
        ruler.start()
        q = query_process(tmp_path, "query", [ruler.grpc]).start()
        procs.append(q)
        _wait("the alert firing at the querier", lambda: requests.get(
            q.url("http", "/api/v1/alerts"), timeout=5).json()["data"]["alerts"])

        async def go():
            async with Browser() as page:
                await page.goto(q.url("http", "/alerts"))
                row = await page.wait_for(
                    "document.querySelector('section[data-state=\"firing\"] "
                    "details[data-rule=\"Always\"] tr[data-state=\"firing\"]')?.textContent")
                assert 'alertname="Always"' in row and "value 3" in row
                await page.screenshot(tmp_path / "alerts.png")
                await page.goto(q.url("http", "/rules"))
                text = await page.wait_for(
                    "document.querySelector('section[data-group=\"constant\"] table.rules')"
                    "?.textContent")
                assert "record: one" in text and "alert: Always" in text and "OK" in text
                assert await page.eval(
                    "document.querySelector('a[data-nav=\"rules\"]').classList.contains('active')")
        asyncio.run(go())
    finally:
        for p in reversed(procs):
            p.stop()


def _reload_stamp(metrics_url: str) -> float:
    body = requests.get(metrics_url, timeout=5).text
    line = next(ln for ln in body.splitlines()
                if ln.startswith("prometheus_rule_config_last_reload_success_timestamp_seconds "))
    return float(line.split()[1])


def test_ruler_reloads_on_sighup_and_exits_0_on_sigterm(tmp_path: Path, procs):
    """SIGHUP reaches the loop's handler (unhandled, it would kill the process) and re-reads
    the unchanged rule files, which the file watcher alone would not."""
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - record: one\n        expr: vector(1)\n")
    p = rule_process(tmp_path, "ruler", f"--rule-file={rules}", f"--query=127.0.0.1:{free_port()}")
    procs.append(p)
    p.start()
    metrics = p.url("http", "/metrics")
    before = _reload_stamp(metrics)
    p.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while _reload_stamp(metrics) <= before:
        assert p.proc.poll() is None, p.log_text()
        assert time.monotonic() < deadline, "no reload after SIGHUP"
        time.sleep(0.1)
    assert p.stop() == 0
