"""The web UI in a real browser (Debian's headless chromium over the DevTools protocol):
``promring up`` with data written, the query page as table and graph (hover, legend, stacked,
completion, errors) and the stores page with one endpoint down; then Prometheus scraping itself
and node-exporter, remote-writing into ``promring up``, as seen in the UI. Screenshots land in the test's tmp
dir; those of the Prometheus setup in $PROMRING_SCREENSHOTS when set (the README's pictures:
``PROMRING_SCREENSHOTS=docs/screenshots pytest tests/e2e/test_web_ui_browser.py``)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from cdp import CHROMIUM, Browser
from harness import (self_scrape_remote_write, PrometheusProcess, free_port, query_process,
                     start_process, stop_process)
from rw import push

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test.sh installs it)")

M = "__name__"
STEP_MS = 15_000
N = 60  # 15 minutes of samples


def _write(up, t_end_ms: int) -> None:
    ts = [t_end_ms - (N - 1 - i) * STEP_MS for i in range(N)]
    series = [((("__name__", "ui_demo_requests"), ("code", "200"), ("job", "api")), ts,
               [float(10 * i) for i in range(N)]),
              ((("__name__", "ui_demo_requests"), ("code", "500"), ("job", "api")), ts,
               [float(i % 7) for i in range(N)])]
    r = push(up.write_url, series)
    assert r.status_code == 200, r.text


def _shots(tmp_path: Path, readme: bool = False) -> Path:
    d = Path(os.environ.get("PROMRING_SCREENSHOTS") or tmp_path) if readme else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    return d


def _series_name(metric: dict) -> str:
    """How the UI names a series (Prometheus's label set text)."""
    rest = sorted((k, v) for k, v in metric.items() if k != M)
    return metric.get(M, "") + "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in rest) + "}"


def _end_input(t_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t_ms / 1000))


def test_query_page_table_graph_hover_legend_and_completion(promring_up, tmp_path):
    up = promring_up()
    t_end = (int(time.time()) - 60) * 1000
    _write(up, t_end)
    base = f"http://127.0.0.1:{up.http_port}"
    end = _end_input(t_end)
    api = requests.get(f"{up.api}/query", params={"query": "ui_demo_requests", "time": t_end / 1000},
                       timeout=30).json()["data"]["result"]
    want = sorted((_series_name(s["metric"]), s["value"][1]) for s in api)
    names = {s["metric"]["code"]: _series_name(s["metric"]) for s in api}
    assert [v for _, v in want] == ["590", "3"]
    shots = _shots(tmp_path)

    async def go():
        async with Browser() as page:
            # Table tab from a Prometheus-style link: the rows are the API's series and values.
            await page.goto(f"{base}/graph?g0.expr=ui_demo_requests&g0.tab=1&g0.moment_input={quote(end)}")
            await page.wait_for("document.querySelectorAll('table.result tr').length === 2")
            rows = await page.eval("[...document.querySelectorAll('table.result tr')].map("
                                   "r => [...r.cells].map(c => c.textContent))")
            assert sorted(map(tuple, rows)) == want
            await page.screenshot(shots / "query-table.png")

            # Graph tab: one path per series, hover tooltip, legend toggle, stacked areas.
            await page.goto(f"{base}/graph?g0.expr={quote('ui_demo_requests')}&g0.tab=0"
                            f"&g0.range_input=15m&g0.end_input={quote(end)}&g0.step_input=15")
            await page.wait_for("document.querySelectorAll('svg.graph g.series path.line').length === 2")
            d = await page.eval("document.querySelector('svg.graph path.line').getAttribute('d')")
            assert d.count("L") >= N - 2
            assert await page.eval("document.querySelectorAll('svg.graph circle, svg.graph rect').length") <= 2
            await page.screenshot(shots / "query-graph.png")
            tip = await page.hover_until(
                "(() => { const r = document.querySelector('svg.graph .overlay')"
                ".getBoundingClientRect(); return [r.right - 5, r.top + 5]; })()",
                "(() => { const t = document.querySelector('.tooltip');"
                " return t && !t.hidden && t.textContent; })()")
            # Top right of the plot is the last sample of the 200 series (590).
            assert names["200"] in tip and "590" in tip
            await page.screenshot(shots / "query-graph-hover.png")
            await page.click('.legend-item[data-series*="500"]')
            await page.wait_for("document.querySelectorAll('svg.graph g.series').length === 1")
            assert await page.eval("document.querySelector('svg.graph g.series').dataset.series") == names["200"]
            assert await page.eval("document.querySelector('.legend-item.off').dataset.series") == names["500"]
            await page.click('.legend-item[data-series*="500"]')
            await page.wait_for("document.querySelectorAll('svg.graph g.series').length === 2")
            # Ctrl-click shows only that series; again, all of them.
            await page.eval("document.querySelector('.legend-item[data-series*=\"200\"]')"
                            ".dispatchEvent(new MouseEvent('click', {ctrlKey: true, bubbles: true}))")
            await page.wait_for("document.querySelectorAll('svg.graph g.series').length === 1")
            assert await page.eval("document.querySelector('svg.graph g.series').dataset.series") == names["200"]
            await page.eval("document.querySelector('.legend-item[data-series*=\"200\"]')"
                            ".dispatchEvent(new MouseEvent('click', {ctrlKey: true, bubbles: true}))")
            await page.wait_for("document.querySelectorAll('svg.graph g.series').length === 2")
            await page.click('input[data-opt="stacked"]')
            await page.wait_for("document.querySelectorAll('svg.graph path.area').length === 2")
            assert "g0.stacked=1" in await page.eval("location.search")

            # A link without g0.tab opens a table, as Prometheus does.
            await page.goto(f"{base}/graph?g0.expr=ui_demo_requests&g0.moment_input={quote(end)}")
            await page.wait_for("document.querySelectorAll('table.result tr').length === 2")
            assert await page.eval("document.querySelector('button[data-tab=\"1\"]').classList.contains('active')")

            # Completion of a metric name from the API, then run it as a table.
            await page.click('button[data-tab="1"]')
            await page.eval("(() => { const t = document.querySelector('textarea.expr'); t.value = '';"
                            " t.focus(); })()")
            await page.type("sum by (co")
            await page.wait_for("[...document.querySelectorAll('.completions li')].some("
                                "l => l.textContent.startsWith('code'))")
            await page.eval("document.querySelector('textarea.expr').value = ''")
            await page.type("ui_demo_re")
            await page.wait_for("[...document.querySelectorAll('.completions li')].some("
                                "l => l.textContent.startsWith('ui_demo_requests'))")
            await page.key("Tab", "Tab", 9)
            assert await page.eval("document.querySelector('textarea.expr').value") == "ui_demo_requests"
            assert await page.eval("!!document.querySelector('.hl .t-metric')")
            await page.key("Enter", "Enter", 13)
            await page.wait_for("document.querySelectorAll('table.result tr').length === 2")
            assert "g0.expr=ui_demo_requests" in await page.eval("location.search")

            # Markup typed into the editor stays text in the highlighting layer.
            await page.eval("document.querySelector('textarea.expr').value = ''")
            await page.type('up{a="<img src=x onerror=window.pwned=1>"} <b>')
            assert await page.eval("document.querySelectorAll('.hl img, .hl b').length") == 0
            assert await page.eval("document.querySelector('.hl').textContent.startsWith('up{a=\"<img')")

            # URL state: Prometheus's parameters survive a round trip; durations parse as in PromQL.
            got = await page.eval(
                "import('/static/query.js').then(m => [m.panelsToURL(m.panelsFromURL("
                "'g0.expr=rate(x%5B5m%5D)&g0.tab=0&g0.range_input=2h&g0.end_input=2024-01-02%2003%3A04%3A05"
                "&g0.step_input=30&g1.expr=up&g1.tab=1&g1.deduplicate=0&g1.max_source_resolution=5m')),"
                " m.parseDuration('1h30m'), m.parseDuration('5x'), m.parseTime('2024-01-02 03:04:05')])")
            assert got[0] == ("g0.expr=rate%28x%5B5m%5D%29&g0.tab=0&g0.range_input=2h"
                              "&g0.end_input=2024-01-02+03%3A04%3A05&g0.step_input=30"
                              "&g1.expr=up&g1.tab=1&g1.range_input=1h&g1.deduplicate=0"
                              "&g1.max_source_resolution=5m")
            assert got[1:] == [5_400_000, None, 1_704_164_645_000]

            # A big result (20 series of 11,000 points, the API's maximum) draws one path per
            # series with a few points per pixel column, not one node or segment per sample.
            big = await page.eval(
                "import('/static/graph.js').then(m => { const n = 11000, start = 1e9;"
                " const res = [...Array(20).keys()].map(i => ({metric: {i: String(i)}, values:"
                " [...Array(n).keys()].map(k => [start + k, String(Math.sin(k / 50 + i))])}));"
                " const div = document.createElement('div'); document.body.append(div);"
                " m.renderGraph(div, m.toGrid(res, start, start + n - 1, 1), {start, end: start + n - 1,"
                " step: 1, stacked: false, hidden: new Set(), width: 1000, onToggle() {}});"
                " const paths = [...div.querySelectorAll('path.line')];"
                " const r = [paths.length, Math.max(...paths.map(p => p.getAttribute('d').split('L').length)),"
                " div.querySelectorAll('svg *').length]; div.remove(); return r; })")
            assert big[0] == 20 and big[1] <= 4 * 1000 and big[2] < 150, big

            # A bad expression shows the API's error.
            await page.eval("document.querySelector('textarea.expr').value = ''")
            await page.type("sum(ui_demo_requests")
            await page.click("button[data-run]")
            err = await page.wait_for("document.querySelector('.alert.error')?.textContent")
            assert "bad_data" in err

            # The metrics explorer lists the API's metric names; a click inserts one.
            await page.eval("document.querySelector('textarea.expr').value = ''")
            await page.click("button[data-explore]")
            await page.click(".explorer-filter")
            await page.type("demo_req")
            await page.wait_for("document.querySelectorAll('.explorer-list li').length === 1")
            await page.click(".explorer-list li")
            assert await page.eval("document.querySelector('textarea.expr').value") == "ui_demo_requests"
            assert await page.eval("document.querySelector('.explorer').hidden")

            # Panels: add a second, the URL carries both.
            await page.click("button[data-add]")
            await page.type("up")
            await page.key("Escape", "Escape", 27)
            await page.key("Enter", "Enter", 13)
            await page.wait_for("location.search.includes('g1.expr=up')")
            assert await page.eval("document.querySelectorAll('section.panel').length") == 2

            # Status: the in-process ingestor's head and, on demand, series per metric name.
            await page.goto(f"{base}/status")
            head = await page.wait_for("document.querySelector('table.tsdb')?.textContent")
            assert "headSeries2" in head and f"samplesAppended{2 * N}" in head
            await page.click("button[data-top-metrics]")
            top = await page.wait_for("[...document.querySelectorAll('table.top-metrics tbody tr')]"
                                      ".map(r => r.textContent).join('|')")
            assert "ui_demo_requests2" in top
            await page.screenshot(shots / "status.png")
    asyncio.run(go())


def test_stores_page_marks_a_dead_endpoint_under_a_prefix(promring_up, procs, tmp_path):
    grpc = free_port()
    up = promring_up(None, "--grpc-address", f"127.0.0.1:{grpc}")
    dead = f"127.0.0.1:{free_port()}"
    # Served under a prefix (as behind a reverse proxy): pages, assets and API calls all use it.
    q = query_process(tmp_path, "query", [f"127.0.0.1:{grpc}", dead],
                      "--web.external-prefix=/thanos", "--no-query.partial-response").start()
    procs.append(q)
    base = q.url("http", "/thanos")
    shots = _shots(tmp_path)

    async def go():
        async with Browser() as page:
            await page.goto(f"{base}/stores")
            await page.wait_for(f"!!document.querySelector('tr[data-endpoint=\"{dead}\"] .health.down')")
            await page.wait_for(f"!!document.querySelector('tr[data-endpoint=\"127.0.0.1:{grpc}\"] .health.up')")
            row = await page.eval(f"document.querySelector('tr[data-endpoint=\"{dead}\"]').textContent")
            assert "DOWN" in row and "UNAVAILABLE" in row
            assert await page.eval("document.querySelector('a[data-nav=\"stores\"]').classList.contains('active')")
            await page.screenshot(shots / "stores.png")
            # Partial responses are off on this querier (so the toggle starts off): the dead
            # endpoint fails the query; allowed, it is left out with a warning.
            await page.goto(f"{base}/graph?g0.expr=ui_nothing&g0.tab=1")
            err = await page.wait_for("document.querySelector('.alert.error')?.textContent")
            assert dead in err
            assert not await page.eval("document.querySelector('input[data-opt=\"partial_response\"]').checked")
            await page.click('input[data-opt="partial_response"]')
            warning = await page.wait_for("document.querySelector('.alert.warning')?.textContent")
            assert dead in warning
            assert "g0.partial_response=1" in await page.eval("location.search")
            await page.goto(f"{base}/status")
            await page.wait_for("!!document.querySelector('table.runtimeinfo')")
            await page.wait_for("!!document.querySelector('table.buildinfo')")
            await page.goto(f"{base}/flags")
            flags = await page.wait_for("document.querySelector('table.flags')?.textContent")
            assert dead in flags and "query.timeout" in flags
    asyncio.run(go())
    assert up.proc.poll() is None


NODE_EXPORTER = shutil.which("prometheus-node-exporter")
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus package")
@pytest.mark.skipif(NODE_EXPORTER is None,
                    reason="needs Debian's prometheus-node-exporter (scripts/test.sh installs it)")
def test_prometheus_remote_writing_into_promring_up_as_seen_in_the_ui(promring_up, tmp_path):
    """The README's pictures: Prometheus scraping itself and node-exporter, remote-writing into
    ``promring up``, as the query, stores and status pages show it."""
    up = promring_up()
    node_port = free_port()
    node = start_process([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{node_port}"],
                         f"http://127.0.0.1:{node_port}/metrics", tmp_path / "node-exporter.log")
    node_target = f"127.0.0.1:{node_port}"
    config = self_scrape_remote_write(up.write_url, jobs={"node": node_target})
    prom = None
    shots = _shots(tmp_path, readme=True)
    try:
        prom = PrometheusProcess(tmp_path / "prom", config).start()
        deadline = time.monotonic() + 90
        while True:  # some 25 scrapes of each target arrived
            r = requests.get(f"{up.api}/query", params={"query": "count_over_time(up[1m])"}, timeout=10)
            res = r.json()["data"]["result"]
            if len(res) == 2 and min(float(s["value"][1]) for s in res) >= 25:
                break
            assert time.monotonic() < deadline, res
            time.sleep(1)
        target = f"127.0.0.1:{prom.port}"
        cpu = "sum by (mode) (rate(node_cpu_seconds_total[5s]))"
        now = time.time()
        modes = requests.get(f"{up.api}/query_range", timeout=10, params={
            "query": cpu, "start": now - 30, "end": now, "step": 1}).json()["data"]["result"]
        assert len(modes) >= 4, modes  # user, system, idle, iowait...

        async def go():
            async with Browser() as page:
                expr = "sum by (job) (rate(prometheus_http_requests_total[5s]))"
                await page.goto(f"http://127.0.0.1:{up.http_port}/graph?"
                                f"g0.expr={quote(cpu)}&g0.tab=0&g0.range_input=30s"
                                f"&g1.expr={quote(expr)}&g1.tab=1&g2.expr=up&g2.tab=1")
                await page.wait_for(f"document.querySelectorAll('svg.graph path.line').length === {len(modes)}")
                rows = await page.wait_for("(() => { const r = [...[...document.querySelectorAll('section.panel')][2]"
                                           ".querySelectorAll('table.result tr')].map(t => t.textContent);"
                                           " return r.length === 2 && r; })()")
                assert any(f'instance="{target}"' in r and 'job="prometheus"' in r and r.endswith("1") for r in rows)
                assert any(f'instance="{node_target}"' in r and 'job="node"' in r and r.endswith("1") for r in rows)
                d = await page.eval("document.querySelector('svg.graph path.line').getAttribute('d')")
                assert d.count("L") >= 15
                tip = await page.hover_until(
                    "(() => { const r = document.querySelector('svg.graph .overlay')"
                    ".getBoundingClientRect(); return [r.x + r.width * 0.8, r.y + r.height / 2]; })()",
                    "(() => { const t = document.querySelector('.tooltip');"
                    " return t && !t.hidden && t.textContent; })()")
                assert 'mode="user"' in tip
                await page.screenshot(shots / "query.png")
                await page.goto(f"http://127.0.0.1:{up.http_port}/stores")
                await page.wait_for("document.querySelectorAll('.health.up').length === 2")
                await page.screenshot(shots / "stores.png")
                await page.goto(f"http://127.0.0.1:{up.http_port}/status")
                await page.wait_for("!!document.querySelector('table.tsdb')")
                await page.click("button[data-top-metrics]")
                await page.wait_for("document.querySelectorAll('table.top-metrics tbody tr').length === 10")
                await page.screenshot(shots / "status.png")
        asyncio.run(go())
    finally:
        if prom is not None:
            prom.stop()
        stop_process(node)
