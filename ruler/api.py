"""The ruler's HTTP API: ``/api/v1/rules`` and ``/api/v1/alerts`` (the JSON the querier gives
for the same groups over the Rules API: Prometheus's shapes with Thanos's additions),
``/-/reload``."""
from __future__ import annotations

from typing import Awaitable, Callable

import orjson
from aiohttp import web

from querier.rulesjson import RULE_TYPES, alerts_json, group_json
from storeapi import rules_pb2

from .group import Group
from .rulesgrpc import groups_pb


def _json(payload: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status,
                        content_type="application/json")


def bad_data(msg: str) -> web.Response:
    return _json({"status": "error", "errorType": "bad_data", "error": msg}, 400)


class RulerAPI:
    def __init__(self, groups: Callable[[], list[Group]],
                 reload: Callable[[], Awaitable[str]]) -> None:
        self.groups = groups
        self.reload = reload

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/rules", self.rules)
        app.router.add_get("/api/v1/alerts", self.alerts)
        app.router.add_post("/-/reload", self.do_reload)
        app.router.add_put("/-/reload", self.do_reload)

    async def rules(self, request: web.Request) -> web.Response:
        kind = request.query.get("type", "").lower()
        if kind not in RULE_TYPES:
            return bad_data(f"unsupported type {kind!r}")
        req = rules_pb2.RulesRequest(type=RULE_TYPES[kind])
        groups = [group_json(g) for g in groups_pb(self.groups(), req)]
        return _json({"status": "success", "data": {"groups": groups}})

    async def alerts(self, _: web.Request) -> web.Response:
        req = rules_pb2.RulesRequest(type=rules_pb2.RulesRequest.ALERT)
        return _json({"status": "success",
                      "data": {"alerts": alerts_json(groups_pb(self.groups(), req))}})

    async def do_reload(self, _: web.Request) -> web.Response:
        err = await self.reload()
        if err:
            return web.Response(status=500, text=f"failed to reload config: {err}\n")
        return web.Response(text="")
