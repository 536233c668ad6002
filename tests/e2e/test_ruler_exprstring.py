"""The ``query`` of /api/v1/rules: our printing of each expression equals Prometheus 2.42's for
the same rule file (Prometheus reprints the parse tree: spacing, numbers, durations, matchers)."""
from __future__ import annotations

import time
from pathlib import Path

import requests
import yaml

from harness import PrometheusProcess
from ruler.exprstring import canonical_query

EXPRESSIONS = [
    'up', 'up{job="a",instance=~"b.*"}', '{__name__="up",job!="x"}',
    'rate(http_requests_total{code!~"5.."}[5m])', 'sum by (job, le) (rate(x_bucket[90m]))',
    'sum without (instance) (x)', 'sum(x) by (a)', 'topk(3, x)', 'count_values("v", x)',
    'quantile(0.9, x)', 'histogram_quantile(0.99, sum by (le) (rate(x[1h])))',
    'a / on(x) group_left(y) b', 'a * ignoring(z) b', 'a + on() group_right b', 'a > bool 1',
    'a and on () b', 'a or b', 'a unless b', '-x', '(a + b) * 2', 'x offset 5m', 'x offset -1h',
    'x[5m] offset 1d', 'x @ 1000', 'x @ start()', 'rate(x[5m] @ end())', 'max_over_time(x[1h:5m])',
    'max_over_time(rate(x[5m])[30m:] offset 2m)', '1234567.891 * x', '0.0000001', '1e21',
    '100000000', 'label_replace(x, "dst", "$1", "src", "(.*)")', 'vector(1)',
    'time() - x > 600', 'absent(up{job="x"})', 'x == bool 0',
    'x{a="with \\"quote\\" and \\\\ backslash"}', 'x % 3 ^ 2', 'clamp_max(x, 1e+06)', 'x[7d]',
    'x[90s]', 'x[1h30m]', 'sum(rate(x[5m])) / ignoring(code) group_left sum(rate(y[5m]))',
]


def test_query_strings_equal_prometheus(tmp_path: Path):
    rules = tmp_path / "exprs.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "interval": "1h", "rules": [
        {"record": f"r{i}", "expr": e} for i, e in enumerate(EXPRESSIONS)]}]}))
    prom = PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1m\n"
                             f'rule_files: ["{rules}"]\n').start()
    try:
        deadline = time.monotonic() + 30
        groups = []
        while not groups and time.monotonic() < deadline:
            groups = requests.get(f"{prom.api}/rules", timeout=5).json()["data"]["groups"]
            time.sleep(0.2)
    finally:
        prom.stop()
    theirs = [r["query"] for r in groups[0]["rules"]]
    ours = [canonical_query(e) for e in EXPRESSIONS]
    assert [(e, o) for e, o, t in zip(EXPRESSIONS, ours, theirs) if o != t] == []
    assert len(theirs) == len(EXPRESSIONS)
