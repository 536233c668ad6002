"""Thanos's command lines run unchanged with ``thanos`` replaced by ``promring``: the
docker-compose style trio (store, receive, query with ``--store``), and queriers stacked over
an ingestor with the global one finding the regional one by file SD."""
from __future__ import annotations

import json
import shlex
import time

import pytest
import requests

from harness import ServerProcess, free_port, promring_cmd, query_process, receive_process
from rw import HEADERS, body, push

M = "__name__"


@pytest.fixture
def procs():
    started: list[ServerProcess] = []
    yield started
    for p in reversed(started):
        p.stop()


def _run(tmp_path, name: str, command: str, ports: dict[str, int], ready: str) -> ServerProcess:
    """A Thanos command line (``thanos ...``) started as ``promring ...``."""
    argv = shlex.split(command)
    assert argv[0] == "thanos"
    return ServerProcess(promring_cmd() + argv[1:], tmp_path, name, ports,
                         [f"http://127.0.0.1:{ports[ready]}/-/ready"]).start()


def _instant(api: str, q: str, t_ms: int) -> list:
    r = requests.get(f"{api}/query", params={"query": q, "time": t_ms / 1000}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_docker_compose_commands_run_and_answer(tmp_path, procs):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (tmp_path / "bucket.yml").write_text(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    sg, sh, rg, rh, rw, qh, qg = (free_port() for _ in range(7))
    (tmp_path / "hashring.json").write_text(json.dumps(
        [{"hashring": "default", "endpoints": [f"127.0.0.1:{rg}"]}]))
    store = _run(tmp_path, "store", f"""thanos store --data-dir {tmp_path}/store
        --objstore.config-file {tmp_path}/bucket.yml
        --http-address 127.0.0.1:{sh} --grpc-address 127.0.0.1:{sg}""", {"http": sh}, "http")
    procs.append(store)
    receive = _run(tmp_path, "receive", f"""thanos receive --tsdb.path {tmp_path}/receive
        --grpc-address 127.0.0.1:{rg} --http-address 127.0.0.1:{rh}
        --receive.replication-factor 1 --label 'receive_replica="0"' --label 'receive_cluster="eu1"'
        --receive.local-endpoint 127.0.0.1:{rg} --receive.hashrings-file {tmp_path}/hashring.json
        --remote-write.address 127.0.0.1:{rw}
        --objstore.config '{(tmp_path / "bucket.yml").read_text()}'""", {"rw": rw}, "rw")
    procs.append(receive)
    query = _run(tmp_path, "query", f"""thanos query --http-address 127.0.0.1:{qh}
        --grpc-address 127.0.0.1:{qg} --store 127.0.0.1:{sg} --store 127.0.0.1:{rg}
        --query.replica-label receive_replica""", {"http": qh}, "http")
    procs.append(query)

    now = int(time.time() * 1000)
    url = f"http://127.0.0.1:{rw}/api/v1/receive"
    r = push(url, [(((M, "demo_up"), ("job", "compose")), [now - 1000, now], [1.0, 2.0])])
    assert r.status_code == 200, r.text
    got = _instant(f"http://127.0.0.1:{qh}/api/v1", "demo_up", now)
    assert [(s["metric"], s["value"][1]) for s in got] == [
        ({M: "demo_up", "job": "compose", "receive_cluster": "eu1", "tenant_id": "default-tenant"},
         "2")]

    # The replica header of an already replicated write (router+ingestor honours it).
    one = body([(((M, "demo_rep"), ("job", "compose")), [now], [3.0])])
    for value, status in (("abc", 400), ("2", 400), ("1", 200)):
        r = requests.post(url, data=one, headers={**HEADERS, "THANOS-REPLICA": value}, timeout=30)
        assert r.status_code == status, (value, r.text)
    assert r.text == "" and len(_instant(f"http://127.0.0.1:{qh}/api/v1", "demo_rep", now)) == 1
    r = requests.post(url, data=one, headers={**HEADERS, "THANOS-REPLICA": "abc"}, timeout=30)
    assert r.text.strip() == "could not parse replica header"


def test_global_querier_over_regional_querier_found_by_file_sd(tmp_path, procs):
    ing = receive_process(tmp_path, "ing", "--label", 'region="eu"').start()
    procs.append(ing)
    regional = query_process(tmp_path, "regional", [ing.grpc]).start()
    procs.append(regional)
    sd = tmp_path / "targets.yml"
    sd.write_text("[]\n")
    top = query_process(tmp_path, "global", [], f"--store.sd-files={tmp_path}/*.yml",
                        "--web.route-prefix=/global").start()
    procs.append(top)
    api = top.url("http", "/global/api/v1")

    now = int(time.time() * 1000)
    r = push(ing.url("remote_write", "/api/v1/receive"),
             [(((M, "stacked"), ("i", str(i))), [now], [float(i)]) for i in range(3)])
    assert r.status_code == 200, r.text
    assert _instant(api, "stacked", now) == []

    sd.write_text(f"- targets: ['{regional.grpc}']\n")  # picked up without a restart
    deadline = time.monotonic() + 30
    while not (got := _instant(api, "sum(stacked)", now)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert got and got[0]["value"][1] == "3"
    got = _instant(api, "stacked", now)
    assert sorted(s["metric"]["i"] for s in got) == ["0", "1", "2"]
    assert all(s["metric"]["region"] == "eu" for s in got)


def test_replica_header_writes_only_that_replica_with_inline_hashrings(tmp_path, procs):
    """Two router+ingestors replicating to each other (RF 2) from an inline --receive.hashrings:
    a plain write lands on both, a write carrying THANOS-REPLICA: 1 only on each series' first
    replica (Thanos's already-replicated write), so every series is on exactly one of them."""
    ports = [{"remote_write": free_port(), "grpc": free_port(), "http": free_port()} for _ in range(2)]
    ring = json.dumps([{"algorithm": "ketama",
                        "endpoints": [f"127.0.0.1:{p['grpc']}" for p in ports]}])
    nodes = []
    for i, p in enumerate(ports):
        args = promring_cmd() + [
            "receive", "--tsdb.path", str(tmp_path / f"r{i}"),
            "--remote-write.address", f"127.0.0.1:{p['remote_write']}",
            "--grpc-address", f"127.0.0.1:{p['grpc']}", "--http-address", f"127.0.0.1:{p['http']}",
            "--receive.capnproto-address=127.0.0.1:0", f"--receive.hashrings={ring}", "--receive.replication-factor=2",
            f"--receive.local-endpoint=127.0.0.1:{p['grpc']}"]
        nodes.append(ServerProcess(args, tmp_path, f"r{i}", p,
                                   [f"http://127.0.0.1:{p['remote_write']}/-/ready"]))
    for n in nodes:
        procs.append(n.start())
    queriers = [query_process(tmp_path, f"q{i}", [n.grpc]).start() for i, n in enumerate(nodes)]
    procs.extend(queriers)

    now = int(time.time() * 1000)
    url = nodes[0].url("remote_write", "/api/v1/receive")
    both = [(((M, "plain"), ("i", str(i))), [now], [1.0]) for i in range(40)]
    assert push(url, both).status_code == 200
    once = body([(((M, "replicated"), ("i", str(i))), [now], [1.0]) for i in range(40)])
    r = requests.post(url, data=once, headers={**HEADERS, "THANOS-REPLICA": "1"}, timeout=30)
    assert r.status_code == 200, r.text

    def held(q, name):
        return {s["metric"]["i"] for s in _instant(q.url("http", "/api/v1"), name, now)}
    assert held(queriers[0], "plain") == held(queriers[1], "plain") == {str(i) for i in range(40)}
    a, b = held(queriers[0], "replicated"), held(queriers[1], "replicated")
    assert a and b and not (a & b) and a | b == {str(i) for i in range(40)}
