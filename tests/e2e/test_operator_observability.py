"""What an operator sees of a running distributed setup (receive, store, query): metrics under
Thanos's and Prometheus's names that move with activity, and logs for start-up addresses,
endpoint transitions, rejected writes (a periodic summary), slow queries and a clean stop."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness import free_port, promring_cmd, query_process, receive_process, start_process, stop_process
from rw import push, query

NOW_MS = int(time.time() * 1000)


def scrape(url: str) -> dict[str, list[tuple[dict, float]]]:
    out: dict[str, list[tuple[dict, float]]] = {}
    for fam in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m: dict, name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels`` (0 when there are none)."""
    return sum(v for lbls, v in m.get(name, []) if labels.items() <= lbls.items())


def wait_for_log(proc, pattern: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, proc.log_text())
        if m:
            return m.group(0)
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not logged:\n{proc.log_text()[-3000:]}")


class StoreProc:
    """``promring store`` over an empty filesystem bucket (harness.start_process)."""

    def __init__(self, workdir: Path) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        cfg = workdir / "bucket.yml"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {workdir / 'bucket'}\n")
        self.log_path = workdir / "store.log"
        self.proc = start_process(promring_cmd() + [
            "store", "--data-dir", str(workdir / "store"), "--objstore.config-file", str(cfg),
            "--grpc-address", f"127.0.0.1:{self.grpc_port}",
            "--http-address", f"127.0.0.1:{self.http_port}"],
            f"http://127.0.0.1:{self.http_port}/-/ready", self.log_path)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("observability")
    recv = receive_process(work, "recv", "--tsdb.wal-fsync=batch",
                           "--receive.rejected-log-interval=1s").start()
    store = StoreProc(work)
    before = {"recv": scrape(recv.url("http", "/metrics")),
              "store": scrape(f"http://127.0.0.1:{store.http_port}/metrics")}
    q = query_process(work, "query", [recv.grpc, f"127.0.0.1:{store.grpc_port}"],
                      "--query.log-queries-longer-than=-1s").start()
    try:
        before["query"] = scrape(q.url("http", "/metrics"))
        url = recv.url("remote_write", "/api/v1/receive")
        for tenant in ("team-a", "team-b"):
            series = [((("__name__", "up"), ("job", tenant)), [NOW_MS - 2000, NOW_MS - 1000], [1, 1])]
            assert push(url, series, tenant=tenant).status_code == 200
        late = [((("__name__", "up"), ("job", "team-a")), [NOW_MS - 5000], [1])]  # out of order
        assert push(url, late, tenant="team-a").status_code == 409
        wait_for_log(q, r'msg="endpoint healthy" address=127\.0\.0\.1:%d' % store.grpc_port)
        wait_for_log(q, r'msg="endpoint healthy" address=%s' % re.escape(recv.grpc))
        assert len(query(q.url("http", "/api/v1"), "up", NOW_MS / 1000)) == 2
        yield recv, store, q, before
    finally:
        q.stop()
        stop_process(store.proc)
        recv.stop()


def test_receive_metrics_have_prometheus_and_thanos_names_and_move(setup):
    recv, _, _, before = setup
    m = scrape(recv.url("http", "/metrics"))
    for tenant in ("team-a", "team-b"):
        assert value(m, "prometheus_tsdb_head_series", tenant=tenant) == 1
        assert value(m, "prometheus_tsdb_head_series_created_total", tenant=tenant) == 1
        assert value(m, "prometheus_tsdb_head_min_time", tenant=tenant) == NOW_MS - 2000
        assert value(m, "prometheus_tsdb_head_max_time", tenant=tenant) == NOW_MS - 1000
        assert value(m, "prometheus_tsdb_wal_fsync_duration_seconds_count", tenant=tenant) >= 1
        for name in ("prometheus_tsdb_wal_corruptions_total", "prometheus_tsdb_wal_writes_failed_total",
                     "prometheus_tsdb_head_series_removed_total",
                     "prometheus_tsdb_data_replay_duration_seconds"):
            assert name in m and value(m, name, tenant=tenant) == 0 or name.endswith("seconds"), name
    assert value(m, "thanos_build_info") == 1 and value(m, "promring_build_info") == 1
    # Thanos's HTTP metrics of the remote-write handler (what its receive alerts select).
    assert value(m, "http_requests_total", handler="receive", code="200") == 2
    assert value(m, "http_requests_total", handler="receive", code="409") == 1
    assert value(m, "http_request_duration_seconds_count", handler="receive") == 3
    (labels, _), = m["thanos_build_info"]
    assert {"version", "revision", "branch", "goversion"} <= set(labels)
    # The querier's Series calls reached the ingestor's own HTTP/2 gRPC server.
    series_ok = dict(grpc_service="thanos.Store", grpc_method="Series", grpc_type="server_stream")
    assert value(m, "grpc_server_handled_total", grpc_code="OK", **series_ok) > \
        value(before["recv"], "grpc_server_handled_total", grpc_code="OK", **series_ok)
    assert value(m, "grpc_server_started_total", **series_ok) >= \
        value(m, "grpc_server_handled_total", **series_ok)
    assert value(m, "grpc_server_handling_seconds_count", **series_ok) > 0
    assert value(m, "grpc_server_handled_total", grpc_service="thanos.info.Info", grpc_method="Info",
                 grpc_type="unary", grpc_code="OK") > 0


def test_store_and_query_metrics_have_thanos_names_and_move(setup):
    _, store, q, before = setup
    s = scrape(f"http://127.0.0.1:{store.http_port}/metrics")
    # The querier's health checks (an empty bucket: no Series call is sent to it).
    info_ok = dict(grpc_service="thanos.info.Info", grpc_method="Info", grpc_type="unary",
                   grpc_code="OK")
    assert value(s, "grpc_server_handled_total", **info_ok) > \
        value(before["store"], "grpc_server_handled_total", **info_ok)
    assert value(s, "grpc_server_handling_seconds_count", grpc_method="Info") > 0
    assert value(s, "thanos_build_info") == 1 and "thanos_blocks_meta_syncs_total" in s
    assert value(s, "thanos_objstore_bucket_operations_total", operation="iter") > 0
    series_ok = dict(grpc_service="thanos.Store", grpc_method="Series", grpc_code="OK")

    m = scrape(q.url("http", "/metrics"))
    assert value(m, "grpc_client_handled_total", grpc_type="server_stream", **series_ok) > \
        value(before["query"], "grpc_client_handled_total", grpc_type="server_stream", **series_ok)
    assert value(m, "grpc_client_handled_total", grpc_method="Info", grpc_code="OK") >= 2
    assert value(m, "grpc_client_handling_seconds_count", grpc_method="Series") >= 1
    assert value(m, "thanos_store_nodes_grpc_connections") == 2
    assert value(m, "prometheus_engine_queries_concurrent_max") == 20
    assert value(m, "thanos_query_concurrent_gate_queries_max") == 20
    assert "prometheus_engine_queries" in m and "thanos_query_concurrent_gate_queries_in_flight" in m
    assert value(m, "thanos_build_info") == 1


def test_logs_name_addresses_rejections_and_slow_queries(setup):
    recv, store, q, _ = setup
    assert wait_for_log(recv, r'msg="promring is up" component=receive remote_write_address=127\.0\.0\.1:%d'
                        % recv.ports["remote_write"])
    assert f"grpc_address=127.0.0.1:{recv.ports['grpc']}" in recv.log_text()
    assert f"http_address=127.0.0.1:{q.ports['http']}" in wait_for_log(q, r'msg="promring is up".*')
    assert f"grpc_address=127.0.0.1:{store.grpc_port}" in wait_for_log(store, r'msg="promring is up".*')
    for p in (recv, store, q):
        assert "components=" not in p.log_text() and "_Up" not in p.log_text()
    # One summary line per tenant and interval, with the count by reason; none per sample.
    line = wait_for_log(recv, r'msg="rejected writes" tenant=team-a .*')
    assert "out_of_order=1" in line and "total=1" in line
    assert "team-b" not in "".join(ln for ln in recv.log_text().splitlines() if "rejected writes" in ln)
    slow = wait_for_log(q, r'msg="slow query detected".*')
    assert "query=up" in slow and "time_taken_s=" in slow


def test_endpoint_down_is_logged_and_every_server_stops_cleanly(setup):
    recv, store, q, _ = setup
    stop_process(store.proc)
    assert "stopped cleanly" in store.log_text()
    wait_for_log(q, r'msg="endpoint unhealthy.*address=127\.0\.0\.1:%d' % store.grpc_port)
    assert q.stop() == 0 and recv.stop() == 0
    for p in (recv, q):
        text = p.log_text()
        assert 'msg="shutting down"' in text and 'msg="stopped cleanly"' in text, text[-2000:]
        assert "Traceback" not in text


def test_compactor_logs_its_address_and_a_clean_stop(tmp_path):
    port = free_port()
    r = subprocess.run(promring_cmd() + [
        "compact", "--data-dir", str(tmp_path / "work"), "--http-address", f"127.0.0.1:{port}",
        "--objstore.config", f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f'msg=listening http_address=127.0.0.1:{port}' in r.stderr
    assert 'msg="stopped cleanly" component=compact' in r.stderr
