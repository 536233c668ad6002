"""Tenant IDs name directories: a bad one (too long, odd characters, path tricks) is a clear 400
on the router and the ingestor alike, never a 500; a repeated tenant header is a 400 so that a
proxy which appends its header instead of replacing it cannot let the client pick the tenant."""
from __future__ import annotations

import http.client
import json

import requests

from harness import query_process, receive_process
from rw import HEADERS, body, push

M = "__name__"
T = 1_700_000_000_000


def _post_raw(port: int, headers: list[tuple[str, str]], data: bytes) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", "/api/v1/receive")
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def _one(name: str):
    return [(((M, name),), [T], [1.0])]


def _check_tenant_rules(url: str, rw_port: int) -> None:
    for bad in ("a" * 256, "a" * 151, "..", ".", "a/b", "../x", "x y", "ten\u00e4nt", "a\\b"):
        r = push(url, _one("m"), tenant=bad)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert "Tenant name not valid" in r.text, (bad, r.text)
    assert push(url, _one("m"), tenant="a" * 150).status_code == 200
    assert push(url, _one("m"), tenant="team-1_prod.eu").status_code == 200

    data = body(_one("dup_header"))
    base = list(HEADERS.items())
    status, text = _post_raw(rw_port, base + [("THANOS-TENANT", "victim"), ("THANOS-TENANT", "x")], data)
    assert status == 400 and "tenant header" in text, (status, text)
    status, text = _post_raw(rw_port, base + [("THANOS-TENANT", "victim"), ("thanos-tenant", "victim")], data)
    assert status == 400, (status, text)
    assert _post_raw(rw_port, base + [("THANOS-TENANT", "victim")], data)[0] == 200


def test_bad_tenant_ids_are_400_on_an_ingestor(tmp_path, procs):
    ing = receive_process(tmp_path, "ing").start()
    procs.append(ing)
    rw = ing.ports["remote_write"]
    _check_tenant_rules(ing.url("remote_write", "/api/v1/receive"), rw)
    assert requests.get(ing.url("remote_write", "/-/ready"), timeout=5).status_code == 200
    assert not any(p.name.startswith("aaaa") and len(p.name) > 150 for p in (tmp_path / "ing").iterdir())

    q = query_process(tmp_path, "q", [ing.grpc]).start()
    procs.append(q)
    r = requests.get(q.url("http", "/api/v1/query"), params={"query": "count by (tenant_id) (m)",
                                                             "time": T / 1000}, timeout=10)
    tenants = {s["metric"]["tenant_id"] for s in r.json()["data"]["result"]}
    assert tenants == {"a" * 150, "team-1_prod.eu"}, tenants


def test_bad_tenant_ids_are_400_on_a_router(tmp_path, procs):
    ing = receive_process(tmp_path, "ing").start()
    procs.append(ing)
    ring = tmp_path / "hashrings.json"
    ring.write_text(json.dumps([{"hashring": "default", "endpoints": [ing.grpc]}]))
    router = receive_process(tmp_path, "router", f"--receive.hashrings-file={ring}").start()
    procs.append(router)
    _check_tenant_rules(router.url("remote_write", "/api/v1/receive"), router.ports["remote_write"])
    assert requests.get(ing.url("remote_write", "/-/ready"), timeout=5).status_code == 200
