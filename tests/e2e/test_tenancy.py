"""Multi-tenancy end to end: tenants writing the same series names see only their own with
``--query.enforce-tenancy``; per-tenant limits refuse over-limit requests (413) and head series
(429) without affecting anyone else. Both through a router in front of an ingestor."""
from __future__ import annotations

import json
import time

import requests

from harness import query_process, receive_process
from rw import push

M = "__name__"
LIMITS = """
write:
  default:
    request:
      series_limit: 50
      samples_limit: 200
  tenants:
    small:
      head_series_limit: 5
    tiny-requests:
      request:
        size_bytes_limit: 80
"""


def series(name: str, n: int, t: int, value: float):
    return [(((M, name), ("k", str(i))), [t], [value]) for i in range(n)]


def instant(api: str, q: str, t: int, tenant: str | None):
    headers = {"THANOS-TENANT": tenant} if tenant else {}
    r = requests.get(f"{api}/query", params={"query": q, "time": t / 1000}, headers=headers, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_tenants_see_only_their_series_and_limits_are_per_tenant(tmp_path, procs):
    limits = tmp_path / "limits.yaml"
    limits.write_text(LIMITS)
    ing = receive_process(tmp_path, "ing", f"--receive.limits-config-file={limits}").start()
    procs.append(ing)
    ring = tmp_path / "hashrings.json"
    ring.write_text(json.dumps([{"hashring": "default", "algorithm": "ketama",
                                 "endpoints": [{"address": ing.grpc, "az": "a"}]}]))
    router = receive_process(tmp_path, "router", f"--receive.hashrings-file={ring}",
                             f"--receive.limits-config-file={limits}").start()
    procs.append(router)
    querier = query_process(tmp_path, "q", [ing.grpc], "--query.enforce-tenancy").start()
    procs.append(querier)
    api = querier.url("http", "/api/v1")
    url = router.url("remote_write", "/api/v1/receive")
    t = int(time.time() * 1000) // 1000 * 1000 - 60_000

    # Two tenants write the same series names with different values.
    assert push(url, series("shared", 3, t, 1.0), tenant="team-a").status_code == 200
    assert push(url, series("shared", 3, t, 2.0), tenant="team-b").status_code == 200
    for tenant, value in (("team-a", "1"), ("team-b", "2")):
        res = instant(api, "shared", t, tenant)
        assert len(res) == 3
        assert {s["metric"]["tenant_id"] for s in res} == {tenant}
        assert {s["value"][1] for s in res} == {value}
    assert instant(api, "shared", t, "team-c") == []
    # Even a query naming another tenant's label cannot cross over.
    assert instant(api, 'shared{tenant_id="team-b"}', t, "team-a") == []
    labels = requests.get(f"{api}/label/tenant_id/values", headers={"THANOS-TENANT": "team-a"},
                          timeout=30).json()["data"]
    assert labels == ["team-a"]

    # Request limits (default for every tenant): too many series or samples -> 413.
    r = push(url, series("big", 51, t, 1.0), tenant="team-a")
    assert r.status_code == 413 and "series" in r.text, r.text
    many = [(((M, "samples"), ("k", "0")), list(range(t - 300_000, t - 99_000, 1000)), [1.0] * 201)]
    r = push(url, many, tenant="team-a")
    assert r.status_code == 413 and "samples" in r.text, r.text
    # A tenant-specific size limit applies to that tenant only.
    r = push(url, series("sized", 10, t, 1.0), tenant="tiny-requests")
    assert r.status_code == 413 and "size" in r.text, r.text
    assert push(url, series("sized", 10, t, 1.0), tenant="team-a").status_code == 200
    assert push(url, series("sized", 1, t, 1.0), tenant="tiny-requests").status_code == 200

    # Head-series limit of tenant "small": once it holds 5 series it gets 429 (Prometheus
    # retries); other tenants keep writing.
    assert push(url, series("hs", 5, t, 1.0), tenant="small").status_code == 200
    r = push(url, series("hs2", 1, t, 1.0), tenant="small")
    assert r.status_code == 429, r.text
    assert push(url, series("hs2", 1, t, 1.0), tenant="team-b").status_code == 200
    # The same limits hold on the ingestor's own remote-write endpoint.
    r = push(ing.url("remote_write", "/api/v1/receive"), series("hs3", 1, t, 1.0), tenant="small")
    assert r.status_code == 429, r.text
    # Nothing over a limit was stored.
    assert instant(api, "big", t, "team-a") == []
    assert instant(api, "hs2", t, "small") == []
    assert len(instant(api, "shared", t, "team-a")) == 3
