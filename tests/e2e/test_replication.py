"""Routing and replication across real processes on loopback: three ingestors behind a router
at replication factor 3, a querier deduplicating on ``receive_replica``; one ingestor killed
with SIGKILL while data streams in; then a ring change that adds a fourth ingestor."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import requests

from harness import query_process, receive_process
from rw import push, raw_samples

M = "__name__"
STEP = 1000


def ring_file(path, endpoints: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"hashring": "default", "endpoints": endpoints}]))
    tmp.replace(path)  # atomic, as a ConfigMap update would be


def batch(name: str, n_series: int, i: int, t0: int):
    return [(((M, name), ("job", "rep"), ("s", str(k))), [t0 + i * STEP], [float(i * 1000 + k)])
            for k in range(n_series)]


def expected(n_series: int, batches, t0: int) -> dict:
    """{series id: sorted [(t seconds, value)]} for the given batch numbers."""
    out: dict[str, list] = {str(k): [] for k in range(n_series)}
    for i in sorted(batches):
        for k in range(n_series):
            out[str(k)].append((t0 + i * STEP, float(i * 1000 + k)))
    return out


def got(api: str, name: str, t_end: int, headers=None) -> dict:
    """{series id: sorted [(t ms, value)]} of every raw sample in the last hour, via the querier."""
    r = requests.get(f"{api}/query", params={"query": f'{name}[1h]', "time": t_end / 1000},
                     headers=headers or {}, timeout=30)
    r.raise_for_status()
    out: dict[str, list] = {}
    for s in r.json()["data"]["result"]:
        assert "receive_replica" not in s["metric"], s["metric"]
        sid = s["metric"]["s"]
        assert sid not in out, f"series {s['metric']} returned twice"
        out[sid] = [(round(float(t) * 1000), float(v)) for t, v in s["values"]]
    return out


def series_count(ingestor) -> float:
    text = requests.get(ingestor.url("http", "/metrics"), timeout=10).text
    # one sample per tenant (prometheus_tsdb_head_series{tenant="..."}), as Thanos's multitsdb
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(("prometheus_tsdb_head_series ", "prometheus_tsdb_head_series{")))


class Writer(threading.Thread):
    """Streams one sample per series per batch through the router; records every status."""

    def __init__(self, url: str, name: str, n_series: int, t0: int, n_batches: int) -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.n_series, self.t0, self.n_batches = url, name, n_series, t0, n_batches
        self.statuses: list[tuple[int, int, str]] = []  # (batch, status, text)
        self.acked: list[int] = []

    def run(self) -> None:
        for i in range(self.n_batches):
            r = push(self.url, batch(self.name, self.n_series, i, self.t0))
            self.statuses.append((i, r.status_code, r.text))
            if 200 <= r.status_code < 300:
                self.acked.append(i)
            time.sleep(0.01)


def rf3(tmp_path, procs, router_flags: tuple[str, ...], *query_flags: str):
    """Three ingestors (receive_replica 0..2), a router at replication factor 3 in front of
    them, and a querier over all three with ``query_flags``."""
    ingestors = [receive_process(tmp_path, f"ing{i}", f'--label=receive_replica="{i}"').start()
                 for i in range(3)]
    procs.extend(ingestors)
    ring = tmp_path / "hashrings.json"
    ring_file(ring, [p.grpc for p in ingestors])
    router = receive_process(tmp_path, "router", f"--receive.hashrings-file={ring}",
                             "--receive.replication-factor=3", *router_flags).start()
    procs.append(router)
    querier = query_process(tmp_path, "querier", [p.grpc for p in ingestors], *query_flags).start()
    procs.append(querier)
    return ingestors, router, querier


def test_replicated_writes_survive_kill9_and_dedup_to_one_copy(tmp_path, procs):
    ingestors, router, querier = rf3(
        tmp_path, procs, ("--receive.hashrings-algorithm=ketama",),
        "--query.replica-label=receive_replica", "--deduplication.func=chain",
        "--query.partial-response")
    api = querier.url("http", "/api/v1")
    write_url = router.url("remote_write", "/api/v1/receive")

    n_series, n_batches = 30, 240
    t0 = (int(time.time() * 1000) // 1000 - 1800) * 1000
    w = Writer(write_url, "replicated", n_series, t0, n_batches)
    w.start()
    while len(w.statuses) < 60:
        time.sleep(0.02)
    done_before_kill = len(w.acked)
    time.sleep(0.5)  # replica writes of the acknowledged batches have landed everywhere
    victim = ingestors[1]
    victim.kill9()
    assert len(w.statuses) < n_batches - 20, "the kill should land while data streams in"
    w.join(120)
    assert not w.is_alive()

    # Every write got a 2xx although one of three replicas was gone.
    bad = [(i, s, t) for i, s, t in w.statuses if not 200 <= s < 300]
    assert not bad, bad[:5]
    assert len(w.acked) == n_batches

    # The querier returns every acknowledged sample exactly once (dedup of the two live replicas;
    # the dead endpoint only adds a warning, as partial responses are on).
    t_end = t0 + n_batches * STEP
    assert got(api, "replicated", t_end) == expected(n_series, w.acked, t0)
    r = requests.get(f"{api}/query", params={"query": "count(replicated)", "time": t_end / 1000},
                     timeout=30).json()
    assert r.get("warnings"), r
    # Without partial responses a dead endpoint is an error, not a silent gap.
    r = requests.get(f"{api}/query", params={"query": "replicated", "time": t_end / 1000,
                                              "partial_response": "false"}, timeout=30)
    assert r.status_code == 422, r.text
    # dedup=false shows the replicas separately.
    r = requests.get(f"{api}/query", params={"query": "count(replicated)", "time": t_end / 1000,
                                              "dedup": "false"}, timeout=30).json()
    assert r["data"]["result"][0]["value"][1] == str(2 * n_series)

    # After a restart the victim replays its WAL and holds what it acknowledged before the kill.
    victim.start()
    solo = query_process(tmp_path, "solo", [victim.grpc], "--query.replica-label=receive_replica").start()
    procs.append(solo)
    have = got(solo.url("http", "/api/v1"), "replicated", t_end)
    must = expected(n_series, range(done_before_kill), t0)
    for sid, samples in must.items():
        assert set(samples) <= set(have.get(sid, [])), sid
    # And the full picture is still one copy of every sample.
    assert got(api, "replicated", t_end) == expected(n_series, w.acked, t0)


def test_adding_an_ingestor_while_writing_loses_nothing_and_moves_few_series(tmp_path, procs):
    ingestors = [receive_process(tmp_path, f"ing{i}", f'--label=receive_replica="{i}"').start()
                 for i in range(4)]
    procs.extend(ingestors)
    ring = tmp_path / "hashrings.json"
    ring_file(ring, [p.grpc for p in ingestors[:3]])
    router = receive_process(tmp_path, "router", f"--receive.hashrings-file={ring}",
                             "--receive.hashrings-algorithm=ketama",
                             "--receive.hashrings-file-refresh-interval=200ms").start()
    procs.append(router)
    querier = query_process(tmp_path, "querier", [p.grpc for p in ingestors],
                            "--query.replica-label=receive_replica",
                            "--deduplication.func=chain").start()
    procs.append(querier)

    n_series, n_batches = 400, 120
    t0 = (int(time.time() * 1000) // 1000 - 1800) * 1000
    w = Writer(router.url("remote_write", "/api/v1/receive"), "moving", n_series, t0, n_batches)
    w.start()
    while len(w.statuses) < 30:
        time.sleep(0.02)
    assert series_count(ingestors[3]) == 0
    ring_file(ring, [p.grpc for p in ingestors])  # the ring grows while writes go on
    w.join(120)
    assert not w.is_alive()
    assert all(200 <= s < 300 for _, s, _ in w.statuses), [x for x in w.statuses if x[1] >= 300][:5]
    assert series_count(ingestors[3]) > 0, "the router did not pick up the new ring"

    t_end = t0 + n_batches * STEP
    assert got(querier.url("http", "/api/v1"), "moving", t_end) == expected(n_series, w.acked, t0)

    # Ketama moves about 1/4 of the series to the new fourth node (hashmod would move ~3/4).
    moved = series_count(ingestors[3]) / n_series
    print(f"ketama 3->4 nodes: {moved:.3f} of the series moved to the new ingestor")
    assert 0.12 < moved < 0.40, moved


def test_router_ingestor_mode_stores_locally_and_replicates_to_its_peer(tmp_path, procs):
    """Two receivers, each router+ingestor (hashrings file and --receive.local-endpoint), RF 2:
    a write to either lands on both; the hashring's external_labels mark the series."""
    from harness import ServerProcess, free_port, promring_cmd
    ring = tmp_path / "hashrings.json"
    nodes = []
    for i in range(2):
        ports = {"remote_write": free_port(), "grpc": free_port(), "http": free_port()}
        nodes.append(ports)
    ring.write_text(json.dumps([{"hashring": "default", "external_labels": {"ring": "blue"},
                                 "endpoints": [f"127.0.0.1:{p['grpc']}" for p in nodes]}]))
    receivers = []
    for i, ports in enumerate(nodes):
        args = promring_cmd() + [
            "receive", "--tsdb.path", str(tmp_path / f"ri{i}"),
            "--remote-write.address", f"127.0.0.1:{ports['remote_write']}",
            "--grpc-address", f"127.0.0.1:{ports['grpc']}",
            "--http-address", f"127.0.0.1:{ports['http']}", "--receive.capnproto-address=127.0.0.1:0",
            f'--label=receive_replica="{i}"', f"--receive.hashrings-file={ring}",
            "--receive.replication-factor=2", f"--receive.local-endpoint=127.0.0.1:{ports['grpc']}"]
        receivers.append(ServerProcess(args, tmp_path, f"ri{i}", ports,
                                       [f"http://127.0.0.1:{ports['remote_write']}/-/ready"]))
    for r in receivers:
        r.start()
        procs.append(r)
    t0 = (int(time.time() * 1000) // 1000 - 600) * 1000
    for i in range(10):  # each receiver gets its own metric, so each series has one writer
        for name, r in (("via0", receivers[0]), ("via1", receivers[1])):
            assert push(r.url("remote_write", "/api/v1/receive"), batch(name, 20, i, t0)).status_code == 200
    for r in receivers:
        solo = query_process(tmp_path, f"q-{r.name}", [r.grpc]).start()
        procs.append(solo)
        # Quorum of RF 2 is one replica: the second copy may land just after the answer.
        deadline = time.monotonic() + 20
        while True:
            res = requests.get(solo.url("http", "/api/v1/query"),
                               params={"query": '{__name__=~"via.*"}[1h]',
                                       "time": (t0 + 10 * STEP) / 1000},
                               timeout=30).json()["data"]["result"]
            if (len(res) == 40 and all(len(s["values"]) == 10 for s in res)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(res) == 40 and all(len(s["values"]) == 10 for s in res)
        assert {s["metric"]["ring"] for s in res} == {"blue"}


def test_default_querier_answers_every_acked_sample_once_with_one_ingestor_killed(tmp_path, procs):
    """Replication factor 3, one of three ingestors killed with SIGKILL while writing; a querier
    with default flags (only the replica label and every endpoint, the dead one included)
    returns each acknowledged sample exactly once, with a partial-response warning naming the
    dead endpoint (Thanos's default is partial response on)."""
    ingestors, router, querier = rf3(tmp_path, procs, (), "--query.replica-label=receive_replica")
    api = querier.url("http", "/api/v1")

    n_series, n_batches = 20, 150
    t0 = (int(time.time() * 1000) // 1000 - 1800) * 1000
    w = Writer(router.url("remote_write", "/api/v1/receive"), "defaults", n_series, t0, n_batches)
    w.start()
    while len(w.statuses) < 40:
        time.sleep(0.02)
    victim = ingestors[0]
    victim.kill9()
    assert len(w.statuses) < n_batches - 20, "the kill should land while data streams in"
    w.join(120)
    assert not w.is_alive()
    assert len(w.acked) == n_batches, [s for s in w.statuses if not 200 <= s[1] < 300][:5]

    t_end = t0 + n_batches * STEP
    assert got(api, "defaults", t_end) == expected(n_series, w.acked, t0)
    r = requests.get(f"{api}/query", params={"query": "count(defaults)", "time": t_end / 1000},
                     timeout=30).json()
    assert r["data"]["result"][0]["value"][1] == str(n_series)
    assert any(victim.grpc in x for x in r.get("warnings", [])), r
    downs = [line for line in querier.log_text().splitlines()
             if "endpoint unhealthy" in line and victim.grpc in line]
    assert len(downs) == 1, downs  # logged on the change of state, not per query
