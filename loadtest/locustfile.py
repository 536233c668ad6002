"""Locust users for promring: remote-write senders and a Grafana-like dashboard reader.

    locust -f loadtest/locustfile.py --headless -u 3 -r 3 -t 10m \\
        --remote-write-url http://127.0.0.1:19291/api/v1/receive --query-url http://127.0.0.1:10902 \\
        --series 20000 --interval 10 --per-request 500 --churn 0.01 --tenants 2 --writers 2

Every knob is also read from ``LOADTEST_<NAME>`` environment variables (see workload.Config).
``--writers`` remote-write users and ``--queriers`` query users are started (give locust's ``-u``
their sum); each writer owns a block of targets, like one Prometheus remote-write shard.
"""
from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import orjson
from locust import FastHttpUser, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.workload import (RW_HEADERS, Config, WriterShard, dashboard_queries,  # noqa: E402
                               query_params)

RW_NAME = "remote_write"


@dataclass
class Counters:
    """Totals locust's own stats don't know about (per run, attached to the environment)."""

    samples_ok: int = 0
    samples_failed: int = 0
    query_series: int = 0
    query_points: int = 0


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f"lt_{f.name}", type=type(f.default), default=None,
                            help=f"load test: {f.name} (default {f.default!r}; env LOADTEST_{f.name.upper()})")


def config_for(environment) -> Config:  # type: ignore[no-untyped-def]
    """The run's Config: set by run.py, or built once from locust's options and the environment."""
    cfg = getattr(environment, "loadtest_config", None)
    if cfg is None:
        opts = environment.parsed_options
        overrides = {f.name: getattr(opts, f"lt_{f.name}", None) for f in fields(Config)} if opts else {}
        cfg = Config.from_env(**overrides)
        environment.loadtest_config = cfg
    if getattr(environment, "loadtest_counters", None) is None:
        environment.loadtest_counters = Counters()
        environment.loadtest_writer_seq = itertools.count()
    return cfg


@events.init.add_listener
def _fix_user_counts(environment, **_kw) -> None:  # type: ignore[no-untyped-def]
    """Writers and query users come in the configured numbers, whatever ``-u`` says beyond them."""
    cfg = config_for(environment)
    RemoteWriteUser.fixed_count = cfg.writers
    QueryUser.fixed_count = cfg.queriers


class RemoteWriteUser(FastHttpUser):
    """One remote-write shard: sends its targets' samples every ``interval``, evenly paced."""

    host = "http://127.0.0.1"  # unused: requests go to the configured absolute URLs

    def on_start(self) -> None:
        self.cfg = config_for(self.environment)
        self.counters: Counters = self.environment.loadtest_counters
        self.shard = WriterShard(self.cfg, next(self.environment.loadtest_writer_seq) % self.cfg.writers)
        self.headers = dict(RW_HEADERS, **{"THANOS-TENANT": self.shard.tenant})
        self.queue: list[tuple[int, bytes]] = []
        self.next_at = time.monotonic()
        self.gap = self.cfg.interval

    def wait_time(self) -> float:
        return max(0.0, self.next_at - time.monotonic())

    @task
    def write(self) -> None:
        if not self.queue:
            self.queue = list(self.shard.next_round())[::-1]
            self.gap = self.cfg.interval / max(1, len(self.queue))
        n, body = self.queue.pop()
        self.next_at = max(self.next_at + self.gap, time.monotonic() - self.cfg.interval)
        with self.client.post(self.cfg.remote_write_url, data=body, headers=self.headers, name=RW_NAME,
                              catch_response=True) as r:
            if r.status_code // 100 == 2:
                self.counters.samples_ok += n
                r.success()
            else:
                self.counters.samples_failed += n
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")


class QueryUser(FastHttpUser):
    """A dashboard: cycles through instant and range PromQL queries against the querier."""

    host = "http://127.0.0.1"

    def on_start(self) -> None:
        self.cfg = config_for(self.environment)
        self.counters: Counters = self.environment.loadtest_counters
        self.queries = itertools.cycle(dashboard_queries())

    def wait_time(self) -> float:
        return self.cfg.query_wait

    @task
    def query(self) -> None:
        name, path, params = next(self.queries)
        p = query_params(path, params, self.cfg.range_minutes, self.cfg.range_step)
        url = f"{self.cfg.query_url.rstrip('/')}/api/v1/{path}"
        with self.client.get(url, params=p, name=f"{path}: {name}", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                return
            try:
                data = orjson.loads(r.content)["data"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                r.failure(f"bad JSON: {e}")
                return
            result = data["result"] if isinstance(data.get("result"), list) else []
            self.counters.query_series += len(result)
            self.counters.query_points += sum(len(s.get("values", ())) or 1 for s in result)
            r.success()
