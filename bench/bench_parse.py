"""Parse time of typical dashboard queries: promring's PromQL parser against promql-parser (the
Rust library promring used before), interleaved runs, median per query.

    python bench/bench_parse.py [--rounds 7]

promql-parser is in the ``bench`` extra (pip install -e '.[bench]')."""
from __future__ import annotations

import argparse
import statistics
import time

import promql_parser

from querier.promql.parser import parse

QUERIES = [
    'sum by (instance) (rate(node_cpu_seconds_total{mode!="idle",job="node"}[5m]))',
    'histogram_quantile(0.99, sum by (le, handler) (rate(http_request_duration_seconds_bucket{job=~"api.*"}[5m])))',
    '100 - (avg by (instance) (irate(node_cpu_seconds_total{mode="idle"}[1m])) * 100)',
    'node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"} / node_filesystem_size_bytes * 100 < 10 '
    'and on (instance) up == 1',
    'topk(10, sum by (pod) (container_memory_working_set_bytes{namespace="prod"}))',
    "up",
]


def per_query_us(f, n: int = 200) -> float:
    t = time.perf_counter()
    for _ in range(n):
        for q in QUERIES:
            f(q)
    return (time.perf_counter() - t) / (n * len(QUERIES)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    ours, rust = [], []
    for _ in range(a.rounds):
        ours.append(per_query_us(parse))
        rust.append(per_query_us(promql_parser.parse))
    o, r = statistics.median(ours), statistics.median(rust)
    print(f"promring parser {o:.0f} us/query, promql-parser {r:.0f} us/query, ratio {o / r:.2f}x")


if __name__ == "__main__":
    main()
