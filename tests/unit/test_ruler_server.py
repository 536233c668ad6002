"""The ruler as a component: rule files reloaded on change and on /-/reload (a bad file keeps the
running rules), stateful results cut into blocks shipped with the --label set, start-up refusal
of a bad rule file, and recording-rule staleness when a result vanishes."""
from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from harness import promring_cmd
from ruler.config import RulerConfig
from ruler.group import Group, GroupContext, eval_timestamp, group_hash
from ruler.rulefile import parse_rule_file
from ruler.server import Ruler
from ruler.storage import TSDBStore, TSDBStoreConfig
from prometheus_client import CollectorRegistry

RULES = "groups:\n  - name: {name}\n    interval: 1h\n    rules:\n      - record: r\n        expr: vector(1)\n"


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _groups(port: int) -> list[str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/api/v1/rules") as r:
            return [g["name"] for g in (await r.json())["data"]["groups"]]


def test_reload_on_change_and_on_request(tmp_path: Path):
    rules = tmp_path / "r.yml"
    rules.write_text(RULES.format(name="first"))
    cfg = RulerConfig(rule_files=[str(tmp_path / "*.yml")], data_dir=tmp_path / "data",
                      http_address="127.0.0.1:0", grpc_address="", reload_poll_s=0.1)

    async def run():
        ruler = Ruler(cfg)
        await ruler.start()
        port = ruler.ports["http"]
        try:
            assert await _groups(port) == ["first"]
            async with aiohttp.ClientSession() as s:  # its own UI: the alerts and rules pages
                async with s.get(f"http://127.0.0.1:{port}/", allow_redirects=False) as r:
                    assert r.status == 302 and r.headers["Location"] == "/alerts"
                async with s.get(f"http://127.0.0.1:{port}/rules") as r:
                    assert r.status == 200 and 'data-page="rules"' in await r.text()
            rules.write_text(RULES.format(name="second"))
            for _ in range(100):
                if await _groups(port) == ["second"]:
                    break
                await asyncio.sleep(0.05)
            assert await _groups(port) == ["second"]
            rules.write_text(RULES.format(name="third").replace("expr: vector(1)", "expr: sum("))
            async with aiohttp.ClientSession() as s:
                async with s.post(f"http://127.0.0.1:{port}/-/reload") as r:
                    assert r.status == 500
                    text = await r.text()
            assert text.startswith("failed to reload config: ") and "could not parse" in text
            assert await _groups(port) == ["second"]  # the running rules stay
            assert ruler.reload_ok._value.get() == 0
            rules.write_text(RULES.format(name="fourth"))
            async with aiohttp.ClientSession() as s:
                async with s.post(f"http://127.0.0.1:{port}/-/reload") as r:
                    assert r.status == 200
            assert await _groups(port) == ["fourth"]
        finally:
            await ruler.stop()
    _run(run())


def test_bad_rule_file_stops_the_start_with_one_line(tmp_path: Path):
    rules = tmp_path / "bad.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - record: r\n")
    r = subprocess.run(promring_cmd() + ["rule", f"--rule-file={rules}", "--query=127.0.0.1:1"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"promring rule: {rules}: 0:0: group \"g\", rule 1, \"r\": field 'expr' must be set in rule"]
    assert not (tmp_path / "data").exists()  # nothing created before the refusal


def test_stateful_blocks_are_shipped_with_the_external_labels(tmp_path: Path):
    bucket = tmp_path / "bucket"
    cfg = TSDBStoreConfig(data_dir=tmp_path / "data", external_labels=(("ruler", "a"),),
                          block_duration_ms=1000, objstore_config=(
                              f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n"),
                          lifecycle_interval_s=0.1)

    async def run():
        store = TSDBStore(cfg, CollectorRegistry())
        await store.start()
        try:
            now = int(time.time() * 1000) // 1000 * 1000
            for i in range(8):
                await store.append([((("__name__", "r"), ("job", "x")), now - 8000 + i * 1000,
                                     float(i))])
            for _ in range(200):
                metas = list(bucket.glob("*/meta.json"))
                if metas:
                    return [json.loads(m.read_text()) for m in metas]
                await asyncio.sleep(0.05)
            raise AssertionError("no block shipped")
        finally:
            await store.stop()
    metas = _run(run())
    assert all(m["thanos"]["labels"] == {"ruler": "a"} for m in metas)


class _Queries:
    def __init__(self, answers):
        self.answers = list(answers)

    async def instant(self, expr, ts):
        return self.answers.pop(0)


class _Store:
    def __init__(self):
        self.points = []

    async def append(self, points):
        self.points.extend(points)


def test_vanished_recording_results_get_stale_markers():
    spec = parse_rule_file("groups: [{name: g, rules: [{record: r, expr: x}]}]\n", "f")[0]
    store = _Store()

    async def notify(*_):
        return None
    ctx = GroupContext(query=_Queries([[({"a": "1"}, 1.0), ({"a": "2"}, 2.0)], [({"a": "1"}, 3.0)],
                                       []]), store=store, notify=notify)
    g = Group(spec, 1000, ctx)
    for ts in (1000, 2000, 3000):
        asyncio.run(g.eval(ts))
    got = [(dict(lb)["a"], ts, "stale" if math.isnan(v) else v) for lb, ts, v in store.points]
    assert got == [("1", 1000, 1.0), ("2", 1000, 2.0), ("1", 2000, 3.0), ("2", 2000, "stale"),
                   ("1", 3000, "stale")]
    stale_bits = {struct.pack("<d", v) for _, _, v in store.points if math.isnan(v)}
    assert stale_bits == {struct.pack("<Q", 0x7FF0000000000002)}  # Prometheus's StaleNaN


def test_eval_timestamps_are_slots_of_the_group_offset():
    interval = 60_000 * 1_000_000
    offset = group_hash("g", "/f.yml") % interval
    for now in (0, 123, interval - 1, 5 * interval + offset, 5 * interval + offset - 1):
        ts = eval_timestamp(now, interval, offset)
        assert ts <= now < ts + interval and (ts - offset) % interval == 0


def test_querier_merges_rule_groups_of_replicas_as_thanos():
    from querier.rulesjson import group_json, merge_groups
    from storeapi import labels_pb2, rules_pb2

    def group(file, name, evaluated, *rules):
        g = rules_pb2.RuleGroup(name=name, file=file)
        for kind, rname, replica in rules:
            lbls = labels_pb2.ZLabelSet(labels=[labels_pb2.Label(name="replica", value=replica)])
            if kind == "alert":
                g.rules.add(alert=rules_pb2.Alert(name=rname, labels=lbls, health=replica))
                g.rules[-1].alert.last_evaluation.seconds = evaluated
            else:
                g.rules.add(recording=rules_pb2.RecordingRule(name=rname, labels=lbls,
                                                              health=replica))
                g.rules[-1].recording.last_evaluation.seconds = evaluated
        return g
    merged = merge_groups([
        group("b.yml", "g", 10, ("record", "r", "0"), ("alert", "A", "0")),
        group("a.yml", "g", 10, ("record", "z", "0")),
        group("b.yml", "g", 20, ("record", "r", "1"), ("alert", "A", "1"))], ["replica"])
    got = [(g["file"], [(r["type"], r["name"], r["labels"], r["health"]) for r in g["rules"]])
           for g in map(group_json, merged)]
    assert got == [("a.yml", [("recording", "z", {}, "0")]),
                   ("b.yml", [("alerting", "A", {}, "1"), ("recording", "r", {}, "1")])]


class _RestoreQueries:
    """ALERTS_FOR_STATE as the queriers would show it: newest non-stale sample of the range,
    and whether the instant vector (newest sample not stale) has it."""

    def __init__(self, t_ms: int, active_s: int, stale: bool) -> None:
        self.t_ms, self.active_s, self.stale = t_ms, active_s, stale

    async def last_samples(self, sel, ts, window):
        return [({"__name__": "ALERTS_FOR_STATE", "alertname": "A", "tenant_id": "t"},
                 self.t_ms, float(self.active_s))]

    async def instant(self, sel, ts):
        return [] if self.stale else [({"alertname": "A"}, float(self.active_s))]


@pytest.mark.parametrize("stale,want_active_s", [(False, 1000 + 30), (True, 1100)])
def test_for_state_restore_shifts_by_the_outage_unless_the_alert_had_ended(stale, want_active_s):
    from ruler.rules import Alert
    spec = parse_rule_file(
        "groups: [{name: g, rules: [{alert: A, expr: x, for: 1h}]}]\n", "f")[0]
    store = _Store()

    async def notify(*_):
        return None
    # The old ruler saw the alert pending since t=1000s; its last sample was at t=1070s; the new
    # ruler restores at t=1100s (a 30s outage): pending time is kept, shifted by the outage.
    ctx = GroupContext(query=_RestoreQueries(1_070_000, 1000, stale), store=store, notify=notify,
                       for_grace_period_ms=60_000)
    g = Group(spec, 1000, ctx)
    rule = g.rules[0]
    key = (("alertname", "A"),)
    rule.active[key] = Alert(labels=key, annotations=(), value=1.0, active_at_ms=1_100_000)
    asyncio.run(g._restore(1_100_000))
    assert rule.active[key].active_at_ms == want_active_s * 1000 and rule.restored


def test_stateful_for_state_is_read_from_the_own_tsdb_stale_markers_included(tmp_path: Path):
    from ruler.storage import STALE_NAN
    cfg = TSDBStoreConfig(data_dir=tmp_path / "data", external_labels=(("ruler", "a"),))
    want = (("__name__", "ALERTS_FOR_STATE"), ("alertname", "A"))

    async def run():
        store = TSDBStore(cfg, CollectorRegistry())
        await store.start()
        try:
            now = int(time.time() * 1000)
            await store.append([(want, now - 3000, 1000.0), (want + (("x", "1"),), now - 1000, 7.0)])
            assert await store.last_sample(want, now, 60_000) == (now - 3000, 1000.0)
            await store.append([(want, now - 2000, STALE_NAN)])
            t, v = await store.last_sample(want, now, 60_000)
            assert t == now - 2000 and struct.pack("<d", v) == struct.pack("<d", STALE_NAN)
            assert await store.last_sample(want, now, 1000) is None  # outside the window
        finally:
            await store.stop()
    _run(run())


@pytest.mark.parametrize("args,error", [
    ([], "no query configuration parameter was given"),
    (["--query=a:1", "--query=a:1"], "Address a:1 is duplicated for --query flag."),
    (["--query=a:1", "--alertmanagers.url=am:9093"], "--alertmanagers.url 'am:9093': the scheme"),
    (["--query=a:1", "--remote-write.config=remote_write: [{name: x}]"], "url is required"),
    (["--query=a:1", "--eval-interval=0s"], "--eval-interval must be greater than 0"),
])
def test_flag_errors_stop_the_start(tmp_path: Path, args, error):
    r = subprocess.run(promring_cmd() + ["rule", *args], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and error in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_http_config_basic_auth_guards_the_api(tmp_path: Path):
    import bcrypt
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  u: {bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}\n")
    cfg = RulerConfig(rule_files=[], data_dir=tmp_path / "data", http_address="127.0.0.1:0",
                      grpc_address="", http_config=str(web))

    async def run():
        ruler = Ruler(cfg)
        await ruler.start()
        try:
            url = f"http://127.0.0.1:{ruler.ports['http']}/api/v1/rules"
            async with aiohttp.ClientSession() as s:
                async with s.get(url) as r:
                    assert r.status == 401
                auth = {"Authorization": "Basic " + base64.b64encode(b"u:pw").decode()}
                async with s.get(url, headers=auth) as r:
                    assert r.status == 200
        finally:
            await ruler.stop()
    _run(run())
