"""The ruler's gRPC services: Thanos's Rules API (``/thanos.Rules/Rules``, one RuleGroup per
stream message), Info announcing it (``rules: {}``, so queriers list the ruler's rules), and in
stateful mode the StoreAPI over the ruler's own TSDB."""
from __future__ import annotations

from typing import AsyncIterator, Callable, Iterable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from common.gofmt import format_e

from storeapi import info_pb2, labels_pb2, rules_pb2, types_pb2
from storeapi.server import INFO_SERVICE, StoreServer

from .group import Group
from .rules import AlertingRule, Labels, RecordingRule

RULES_SERVICE = "thanos.Rules"
_STATES = {"inactive": rules_pb2.INACTIVE, "pending": rules_pb2.PENDING,
           "firing": rules_pb2.FIRING}


def _zlabels(labels: Labels | Iterable[tuple[str, str]]) -> labels_pb2.ZLabelSet:
    return labels_pb2.ZLabelSet(labels=[labels_pb2.Label(name=k, value=v) for k, v in labels])


def _ts(seconds: float) -> Timestamp:
    t = Timestamp()
    if seconds:
        t.FromNanoseconds(int(round(seconds * 1e6)) * 1000)  # microseconds, as measured
    else:
        t.seconds = -62135596800  # Go's zero time, as an unevaluated rule reports
    return t


def _ts_ms(ms: int) -> Timestamp:
    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


def rule_pb(rule: RecordingRule | AlertingRule) -> rules_pb2.Rule:
    st = rule.state
    if isinstance(rule, AlertingRule):
        alerts = [rules_pb2.AlertInstance(
            labels=_zlabels(a.labels), annotations=_zlabels(a.annotations),
            state=_STATES[a.state], active_at=_ts_ms(a.active_at_ms), value=format_e(a.value),
            PartialResponseStrategy=types_pb2.ABORT) for a in rule.active.values()
            if a.state != "inactive"]
        return rules_pb2.Rule(alert=rules_pb2.Alert(
            state=_STATES[rule.alert_state()], name=rule.name, query=rule.spec.query or rule.spec.expr,
            duration_seconds=rule.spec.for_ms / 1000, labels=_zlabels(rule.spec.labels),
            annotations=_zlabels(rule.spec.annotations), alerts=alerts, health=st.health,
            last_error=st.last_error, evaluation_duration_seconds=st.duration_s,
            last_evaluation=_ts(st.last_eval_s),
            keep_firing_for_seconds=rule.spec.keep_firing_for_ms / 1000))
    return rules_pb2.Rule(recording=rules_pb2.RecordingRule(
        name=rule.name, query=rule.spec.query or rule.spec.expr, labels=_zlabels(rule.spec.labels), health=st.health,
        last_error=st.last_error, evaluation_duration_seconds=st.duration_s,
        last_evaluation=_ts(st.last_eval_s)))


def group_pb(g: Group, req: rules_pb2.RulesRequest) -> rules_pb2.RuleGroup | None:
    """The group as the request's filters (type, rule names) leave it; None when empty."""
    names = set(req.rule_name)
    rules = [r for r in g.rules
             if (req.type == rules_pb2.RulesRequest.ALL
                 or (req.type == rules_pb2.RulesRequest.ALERT) == isinstance(r, AlertingRule))
             and (not names or r.name in names)]
    if not rules and (names or req.type != rules_pb2.RulesRequest.ALL):
        return None
    return rules_pb2.RuleGroup(
        name=g.name, file=g.file, rules=[rule_pb(r) for r in rules], interval=g.interval_ms / 1000,
        evaluation_duration_seconds=g.duration_s, last_evaluation=_ts(g.last_eval_s),
        limit=g.spec.limit, PartialResponseStrategy=types_pb2.ABORT)


def groups_pb(groups: Iterable[Group], req: rules_pb2.RulesRequest) -> list[rules_pb2.RuleGroup]:
    """The groups a RulesRequest asks for (by group name, file, type and rule name)."""
    names, files = set(req.rule_group), set(req.file)
    out = []
    for g in groups:
        if (names and g.name not in names) or (files and g.file not in files):
            continue
        pb = group_pb(g, req)
        if pb is not None:
            out.append(pb)
    return out


class RulesServer:
    def __init__(self, groups: Callable[[], list[Group]], store: StoreServer | None,
                 label_sets: Callable[[], list[Labels]]) -> None:
        self.groups = groups
        self.store = store
        self.label_sets = label_sets

    async def rules(self, req: rules_pb2.RulesRequest, _: grpc.aio.ServicerContext
                    ) -> AsyncIterator[rules_pb2.RulesResponse]:
        for pb in groups_pb(self.groups(), req):
            yield rules_pb2.RulesResponse(group=pb)

    async def info(self, req: info_pb2.InfoRequest, ctx: grpc.aio.ServicerContext
                   ) -> info_pb2.InfoResponse:
        if self.store is not None:
            resp = await self.store.info(req, ctx)
        else:
            resp = info_pb2.InfoResponse(
                ComponentType="rule",
                label_sets=[labels_pb2.ZLabelSet(labels=[labels_pb2.Label(name=k, value=v)
                                                         for k, v in ls])
                            for ls in self.label_sets()])
        resp.rules.SetInParent()
        return resp

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        out = [grpc.method_handlers_generic_handler(RULES_SERVICE, {
            "Rules": grpc.unary_stream_rpc_method_handler(
                self.rules, rules_pb2.RulesRequest.FromString,
                rules_pb2.RulesResponse.SerializeToString)})]
        if self.store is not None:  # Store service; Info is ours (it adds rules)
            out.append(self.store.handlers()[0])
        out.append(grpc.method_handlers_generic_handler(INFO_SERVICE, {
            "Info": grpc.unary_unary_rpc_method_handler(
                self.info, info_pb2.InfoRequest.FromString,
                info_pb2.InfoResponse.SerializeToString)}))
        return out
