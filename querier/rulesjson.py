"""Rules API groups (``storeapi.rules_pb2``) as the JSON of ``/api/v1/rules`` and
``/api/v1/alerts``: Prometheus's shapes with Thanos's additions (``partialResponseStrategy``),
as Thanos's rulespb marshals them. Shared by the querier (fan-out over rule endpoints) and the
ruler's own HTTP API, so both answer alike."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from storeapi import rules_pb2, types_pb2

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time in JSON
_GO_ZERO_SECONDS = -62135596800
_STATE = {rules_pb2.INACTIVE: "inactive", rules_pb2.PENDING: "pending",
          rules_pb2.FIRING: "firing", rules_pb2.ALERT_STATE_UNKNOWN: "unknown"}


def go_time(ts: Timestamp) -> str:
    """Go's time.Time JSON: RFC 3339, nanoseconds with trailing zeros trimmed, UTC."""
    if ts.seconds <= _GO_ZERO_SECONDS or (ts.seconds == 0 and ts.nanos == 0):
        return ZERO_TIME
    t = datetime.fromtimestamp(ts.seconds, tz=timezone.utc)
    frac = f"{ts.nanos:09d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _labels(zls) -> dict[str, str]:
    return {lb.name: lb.value for lb in zls.labels}


def _strategy(s: int) -> str:
    return types_pb2.PartialResponseStrategy.Name(s)


def alert_instance_json(a: rules_pb2.AlertInstance) -> dict:
    out = {"labels": _labels(a.labels), "annotations": _labels(a.annotations),
           "state": _STATE.get(a.state, "unknown")}
    if a.HasField("active_at"):
        out["activeAt"] = go_time(a.active_at)
    out["value"] = a.value
    out["partialResponseStrategy"] = _strategy(a.PartialResponseStrategy)
    return out


def rule_json(r: rules_pb2.Rule) -> dict:
    if r.WhichOneof("result") == "recording":
        rec = r.recording
        out = {"name": rec.name, "query": rec.query, "labels": _labels(rec.labels),
               "health": rec.health}
        if rec.last_error:
            out["lastError"] = rec.last_error
        out.update({"evaluationTime": rec.evaluation_duration_seconds,
                    "lastEvaluation": go_time(rec.last_evaluation), "type": "recording"})
        return out
    a = r.alert
    out = {"state": _STATE.get(a.state, "unknown"), "name": a.name, "query": a.query,
           "duration": a.duration_seconds, "keepFiringFor": a.keep_firing_for_seconds,
           "labels": _labels(a.labels), "annotations": _labels(a.annotations),
           "alerts": [alert_instance_json(i) for i in a.alerts], "health": a.health}
    if a.last_error:
        out["lastError"] = a.last_error
    out.update({"evaluationTime": a.evaluation_duration_seconds,
                "lastEvaluation": go_time(a.last_evaluation), "type": "alerting"})
    return out


def group_json(g: rules_pb2.RuleGroup) -> dict:
    return {"name": g.name, "file": g.file, "rules": [rule_json(r) for r in g.rules],
            "interval": g.interval, "evaluationTime": g.evaluation_duration_seconds,
            "lastEvaluation": go_time(g.last_evaluation), "limit": g.limit,
            "partialResponseStrategy": _strategy(g.PartialResponseStrategy)}


def _rule_key(r: rules_pb2.Rule) -> tuple:
    """Thanos's Rule.Compare: alerting before recording rules, then name, labels, query, for."""
    kind = r.WhichOneof("result")
    x = r.alert if kind == "alert" else r.recording
    return (0 if kind == "alert" else 1, x.name,
            tuple(sorted((lb.name, lb.value) for lb in x.labels.labels)),
            x.query, r.alert.duration_seconds if kind == "alert" else 0.0)


def _evaluated(r: rules_pb2.Rule) -> tuple[int, int]:
    x = r.alert if r.WhichOneof("result") == "alert" else r.recording
    return (x.last_evaluation.seconds, x.last_evaluation.nanos)


def merge_groups(groups: Iterable[rules_pb2.RuleGroup],
                 replica_labels: Iterable[str] = ()) -> list[rules_pb2.RuleGroup]:
    """Thanos's dedupGroups + dedupRules: groups of several rulers merged by key (file;name),
    sorted; their rules, without replica labels, sorted, and of equal ones (replicas of one
    ruler) the most recently evaluated kept."""
    replicas = set(replica_labels)
    merged: dict[str, rules_pb2.RuleGroup] = {}
    for g in groups:
        key = f"{g.file};{g.name}"
        if key in merged:
            merged[key].rules.extend(g.rules)
        else:
            merged[key] = g
    out = []
    for key in sorted(merged):
        g = merged[key]
        best: dict[tuple, rules_pb2.Rule] = {}
        for r in g.rules:
            x = r.alert if r.WhichOneof("result") == "alert" else r.recording
            if replicas:
                kept = [lb for lb in x.labels.labels if lb.name not in replicas]
                del x.labels.labels[:]
                x.labels.labels.extend(kept)
            k = _rule_key(r)
            if k not in best or _evaluated(r) > _evaluated(best[k]):
                best[k] = r
        rules = [best[k] for k in sorted(best)]
        del g.rules[:]
        g.rules.extend(rules)
        out.append(g)
    return out


def alerts_json(groups: Iterable[rules_pb2.RuleGroup]) -> list[dict]:
    return [alert_instance_json(i) for g in groups for r in g.rules
            if r.WhichOneof("result") == "alert" for i in r.alert.alerts]


RULE_TYPES = {"": rules_pb2.RulesRequest.ALL, "alert": rules_pb2.RulesRequest.ALERT,
              "record": rules_pb2.RulesRequest.RECORD}
