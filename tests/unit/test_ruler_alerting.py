"""The alert state machine (Prometheus's AlertingRule.Eval) and recording-rule results."""
from __future__ import annotations

import math

import pytest

from ruler.rulefile import RuleSpec
from ruler.rules import AlertContext, AlertingRule, RecordingRule, RuleError

M = 60_000


def _rule(for_ms=0, keep_ms=0, restored=True) -> AlertingRule:
    spec = RuleSpec(name="HighLoad", expr="load > 1", alert=True, for_ms=for_ms,
                    keep_firing_for_ms=keep_ms,
                    labels=(("severity", "page"), ("where", "{{ $labels.instance }}")),
                    annotations=(("summary", "{{ $labels.instance }} at {{ $value | humanize }} "
                                             "({{ $externalLabels.replica }})"),))
    return AlertingRule(spec, AlertContext({"replica": "r1"}, "http://q"), restored=restored)


def _series(out):
    return {dict(lbls)["__name__"] + ":" + dict(lbls).get("alertstate", ""): v for lbls, v in out}


def test_pending_then_firing_then_resolved_with_series_and_sends():
    r = _rule(for_ms=2 * M)
    v = [({"__name__": "load", "instance": "a"}, 1500.0)]
    out = r.eval(v, 0, 0)
    a = next(iter(r.active.values()))
    assert a.state == "pending" and dict(a.labels) == {
        "alertname": "HighLoad", "instance": "a", "severity": "page", "where": "a"}
    assert dict(a.annotations) == {"summary": "a at 1.5k (r1)"}
    assert _series(out) == {"ALERTS:pending": 1.0, "ALERTS_FOR_STATE:": 0.0}
    assert r.to_send(0, M, M) == []  # pending alerts are not sent
    r.eval(v, M, 0)
    assert a.state == "pending"
    out = r.eval(v, 2 * M, 0)
    assert a.state == "firing" and a.fired_at_ms == 2 * M
    assert _series(out)["ALERTS:firing"] == 1.0
    sent = r.to_send(2 * M, M, M)
    assert len(sent) == 1 and sent[0].valid_until_ms == 2 * M + 4 * M
    assert r.to_send(2 * M + 1000, M, M) == []  # not before --resend-delay
    assert len(r.to_send(3 * M + 1, M, M)) == 1
    out = r.eval([], 4 * M, 0)
    assert a.state == "inactive" and a.resolved_at_ms == 4 * M and out == []
    sent = r.to_send(4 * M, M, M)
    assert len(sent) == 1 and sent[0].resolved_at_ms == 4 * M  # the resolved notification
    r.eval([], 4 * M + 16 * M, 0)
    assert r.active == {}  # resolved alerts are kept 15 minutes


def test_pending_alert_that_vanishes_is_dropped_and_restarts_its_for():
    r = _rule(for_ms=2 * M)
    v = [({"instance": "a"}, 2.0)]
    r.eval(v, 0, 0)
    r.eval([], M, 0)
    assert r.active == {}
    r.eval(v, 2 * M, 0)
    r.eval(v, 3 * M, 0)
    assert next(iter(r.active.values())).state == "pending"


def test_keep_firing_for():
    r = _rule(keep_ms=2 * M)
    r.eval([({"instance": "a"}, 2.0)], 0, 0)
    a = next(iter(r.active.values()))
    assert a.state == "firing"
    r.eval([], M, 0)
    assert a.state == "firing" and a.keep_firing_since_ms == M
    r.eval([], 2 * M, 0)
    assert a.state == "firing"
    r.eval([], 3 * M, 0)
    assert a.state == "inactive"


def test_not_restored_rule_writes_no_series_and_limit_and_duplicates():
    r = _rule(restored=False)
    assert r.eval([({"instance": "a"}, 2.0)], 0, 0) == []
    r = _rule()
    with pytest.raises(RuleError, match="exceeded limit of 1 with 2 alerts"):
        r.eval([({"instance": "a"}, 2.0), ({"instance": "b"}, 2.0)], 0, 1)
    with pytest.raises(RuleError, match="same labelset after applying alert labels"):
        r.eval([({"__name__": "x", "instance": "a"}, 2.0), ({"__name__": "y", "instance": "a"}, 2.0)], 0, 0)


def test_template_error_is_shown_not_raised():
    spec = RuleSpec(name="A", expr="up", alert=True,
                    annotations=(("s", "{{ index $labels 5 }}"),))
    r = AlertingRule(spec, AlertContext(), restored=True)
    r.eval([({"instance": "a"}, 1.0)], 0, 0)
    assert dict(next(iter(r.active.values())).annotations)["s"].startswith("<error expanding template:")


def test_recording_rule_names_labels_and_conflicts():
    spec = RuleSpec(name="job:x:sum", expr="sum by (job) (x)", alert=False,
                    labels=(("team", "a"), ("job", "")))
    r = RecordingRule(spec)
    out = r.eval([({"job": "j1", "k": "1"}, 1.0), ({"job": "j2", "k": "2"}, 2.0)], 0, 0)
    assert sorted(out) == [((("__name__", "job:x:sum"), ("k", "1"), ("team", "a")), 1.0),
                           ((("__name__", "job:x:sum"), ("k", "2"), ("team", "a")), 2.0)]
    with pytest.raises(RuleError, match="same labelset after applying rule labels"):
        r.eval([({"job": "j1"}, 1.0), ({"job": "j2"}, 2.0)], 0, 0)
    with pytest.raises(RuleError, match="exceeded limit of 1 with 2 series"):
        r.eval([({"k": "1"}, 1.0), ({"k": "2"}, 2.0)], 0, 1)


@pytest.mark.parametrize("body,error", [
    (b"not json", "invalid JSON"),
    (b"[1]", "not a query result"),
    (b'{"status":"error","errorType":"bad_data","error":"parse error"}', "bad_data: parse error"),
    (b'{"status":"success","data":{"resultType":"matrix","result":[]}}', "not a vector or scalar"),
    (b'{"status":"success","data":{"resultType":"string","result":[1,"x"]}}', "not a vector or scalar"),
    (b'{"status":"success","data":{"resultType":"vector","result":[{"metric":5,"value":[1,"2"]}]}}',
     "malformed vector"),
    (b'{"status":"success","data":{"resultType":"scalar","result":[1]}}', "malformed scalar"),
])
def test_querier_answers_that_are_not_a_rule_result(body, error):
    from ruler.queryclient import parse_instant_result
    with pytest.raises(RuleError, match=error):
        parse_instant_result(body)


def test_querier_vector_and_scalar_results():
    from ruler.queryclient import parse_instant_result
    got = parse_instant_result(b'{"status":"success","data":{"resultType":"vector","result":['
                               b'{"metric":{"a":"1"},"value":[1,"+Inf"]},'
                               b'{"metric":{},"value":[1,"2.5"]}]}}')
    assert got[0][0] == {"a": "1"} and got[0][1] == float("inf") and got[1] == ({}, 2.5)
    [(labels, value)] = parse_instant_result(b'{"status":"success","data":{"resultType":'
                                             b'"scalar","result":[1,"NaN"]}}')
    assert labels == {} and math.isnan(value)
