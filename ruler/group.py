"""A rule group: evaluated every interval at timestamps aligned to the group's hash offset
(Prometheus's Group.EvalTimestamp), rules in order, results stored, vanished series marked
stale, alerts sent; after the first evaluations, ``for`` state restored from ALERTS_FOR_STATE."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from common.aio import cancel_and_wait
from receiver.hashring import _ringc

from .queryclient import QueryClient
from .rulefile import GroupSpec
from .rules import (FOR_STATE_METRIC, Alert, AlertContext, AlertingRule, Labels, RecordingRule,
                    RuleError)
from .storage import STALE_NAN, Point, ResultStore

log = logging.getLogger(__name__)

QUERIER_LOOKBACK_MS = 5 * 60_000  # the queriers' default --query.lookback-delta


def group_hash(name: str, file: str) -> int:
    """Prometheus's labels{name, file}.Hash(): xxhash64 of ``file 0xff <file> 0xff name 0xff
    <name> 0xff`` (label names in order)."""
    sep = b"\xff"
    return _ringc.xxh64(b"file" + sep + file.encode() + sep + b"name" + sep + name.encode() + sep)


def eval_timestamp(now_ns: int, interval_ns: int, offset_ns: int) -> int:
    """The latest slot at or before ``now_ns`` of the group's schedule (ns)."""
    adj = now_ns - offset_ns
    return adj - adj % interval_ns + offset_ns


@dataclass
class GroupContext:
    """Everything groups share: where queries, results and alerts go."""

    query: QueryClient
    store: ResultStore
    notify: Callable[[list[Alert], str], Awaitable[None]]  # alerts, the rule's expression
    # (ALERTS_FOR_STATE labels, now, window) -> newest (timestamp, value) of that series, if any
    for_state: Callable[[Labels, int, int], Awaitable[tuple[int, float] | None]] | None = None
    alert_ctx: AlertContext = field(default_factory=AlertContext)
    resend_delay_ms: int = 60_000
    for_grace_period_ms: int = 600_000
    outage_tolerance_ms: int = 3_600_000
    restored: bool = False  # False on the first load: alerts' for-state is restored

    def __post_init__(self) -> None:
        if self.for_state is None:
            self.for_state = QueriedForState(self.query)


class Group:
    def __init__(self, spec: GroupSpec, default_interval_ms: int, ctx: GroupContext) -> None:
        self.spec = spec
        self.name, self.file = spec.name, spec.file
        self.interval_ms = spec.interval_ms or default_interval_ms
        self.ctx = ctx
        self.should_restore = not ctx.restored
        self.rules: list[RecordingRule | AlertingRule] = [
            AlertingRule(r, ctx.alert_ctx, restored=ctx.restored) if r.alert else RecordingRule(r)
            for r in spec.rules]
        self.previous: list[dict[Labels, None]] = [{} for _ in self.rules]
        self.last_eval_s = 0.0
        self.duration_s = 0.0
        self._task: asyncio.Task | None = None

    def eval_timestamp_ms(self, now_ms: int) -> int:
        i_ns = self.interval_ms * 1_000_000
        return eval_timestamp(now_ms * 1_000_000, i_ns,
                              group_hash(self.name, self.file) % i_ns) // 1_000_000

    def copy_state_from(self, old: "Group") -> None:
        """A changed group keeps what matches of the old one (Prometheus's CopyState): the
        series it wrote (so they go stale when gone) and active alerts, by rule name."""
        old_by_name: dict[str, list[int]] = {}
        for i, r in enumerate(old.rules):
            old_by_name.setdefault(r.name, []).append(i)
        for i, r in enumerate(self.rules):
            idx = old_by_name.get(r.name)
            if not idx:
                continue
            j = idx.pop(0)
            self.previous[i] = old.previous[j]
            o = old.rules[j]
            if isinstance(r, AlertingRule) and isinstance(o, AlertingRule):
                r.copy_state_from(o)
        self.should_restore = old.should_restore and self.should_restore
        self.last_eval_s, self.duration_s = old.last_eval_s, old.duration_s

    # -- scheduling ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _sleep_until(self, ts_ms: int) -> None:
        delay = ts_ms / 1000 - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _run(self) -> None:
        ts = self.eval_timestamp_ms(int(time.time() * 1000)) + self.interval_ms
        await self._sleep_until(ts)
        await self._iteration(ts)
        if self.should_restore:
            ts = await self._next(ts)
            await self._iteration(ts)
            await self._restore(int(time.time() * 1000))
            self.should_restore = False
        while True:
            ts = await self._next(ts)
            await self._iteration(ts)

    async def _next(self, ts: int) -> int:
        """The next slot after ``ts``, skipping slots missed while an evaluation ran long."""
        now = time.time() * 1000
        missed = max(0, int((now - ts) // self.interval_ms) - 1)
        nxt = ts + (missed + 1) * self.interval_ms
        await self._sleep_until(nxt)
        return nxt

    async def _iteration(self, ts: int) -> None:
        try:
            await self.eval(ts)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 -- a group must keep its schedule
            log.error("rule group evaluation failed", extra={"group": self.name, "err": str(e)})

    # -- evaluation ----------------------------------------------------------------------------

    async def eval(self, ts: int) -> None:
        started = time.time()
        for i, rule in enumerate(self.rules):
            r_started = time.time()
            try:
                vector = await self.ctx.query.instant(rule.spec.expr, ts)
                out = rule.eval(vector, ts, self.spec.limit)
            except RuleError as e:
                rule.state.record(r_started, str(e))
                log.warning("evaluating rule failed", extra={"group": self.name,
                                                             "rule": rule.name, "err": str(e)})
                continue
            rule.state.record(r_started)
            points: list[Point] = [(lbls, ts, v) for lbls, v in out]
            seen = dict.fromkeys(lbls for lbls, _ in out)
            points.extend((lbls, ts, STALE_NAN) for lbls in self.previous[i] if lbls not in seen)
            self.previous[i] = seen
            try:
                await self.ctx.store.append(points)
            except Exception as e:  # noqa: BLE001 -- storage trouble is the rule's error
                rule.state.record(r_started, f"storing results: {e}")
                log.error("storing rule results failed", extra={"rule": rule.name, "err": str(e)})
            if isinstance(rule, AlertingRule):
                alerts = rule.to_send(ts, self.ctx.resend_delay_ms, self.interval_ms)
                if alerts:
                    await self.ctx.notify(alerts, rule.spec.query or rule.spec.expr)
        self.last_eval_s, self.duration_s = started, time.time() - started

    async def stale_all(self, ts: int) -> None:
        """The group is gone: every series it wrote ends now."""
        points = [(lbls, ts, STALE_NAN) for prev in self.previous for lbls in prev]
        if points:
            await self.ctx.store.append(points)

    async def _restore(self, now_ms: int) -> None:
        """Prometheus's RestoreForState, reading ALERTS_FOR_STATE through the queriers."""
        for rule in self.rules:
            if not isinstance(rule, AlertingRule):
                continue
            hold = rule.spec.for_ms
            if hold < self.ctx.for_grace_period_ms:
                rule.restored = True
                continue
            for a in list(rule.active.values()):
                try:
                    await self._restore_alert(rule, a, now_ms, hold)
                except RuleError as e:
                    log.warning("restoring alert state failed", extra={"alert": rule.name,
                                                                      "err": str(e)})
            rule.restored = True

    async def _restore_alert(self, rule: AlertingRule, a: Alert, now_ms: int, hold: int) -> None:
        want = rule.series_labels(a, FOR_STATE_METRIC)
        last = await self.ctx.for_state(want, now_ms, self.ctx.outage_tolerance_ms)
        if last is None or math.isnan(last[1]):  # none, or the alert had ended (stale marker)
            return
        t_ms, v = last
        down_ms = (t_ms // 1000) * 1000
        active_ms = int(v) * 1000
        remaining = hold - (down_ms - active_ms)
        if remaining <= 0:
            pass  # it was firing when the ruler went down
        elif remaining < self.ctx.for_grace_period_ms:
            active_ms = now_ms + self.ctx.for_grace_period_ms - hold
        else:
            active_ms += now_ms - down_ms
        a.active_at_ms = active_ms
        log.info("restored alert for-state", extra={"alert": rule.name, "active_at": active_ms})


class QueriedForState:
    """ALERTS_FOR_STATE read through the queriers (stateless mode: the results are elsewhere)."""

    def __init__(self, query: QueryClient) -> None:
        self.query = query

    async def __call__(self, want: Labels, now_ms: int, window_ms: int
                       ) -> tuple[int, float] | None:
        sel = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in want) + "}"
        found = await self.query.last_samples(sel, now_ms, window_ms)
        # the series itself, not one with more labels (external labels of the store aside)
        wanted = dict(want)
        match = [f for f in found if all(f[0].get(k) == v for k, v in wanted.items())]
        if not match:
            return None
        _, t_ms, v = max(match, key=lambda f: f[1])
        # Range selectors skip stale markers: a series whose newest sample is one (the alert had
        # ended) shows up there but not as an instant vector within the lookback delta.
        if now_ms - t_ms < QUERIER_LOOKBACK_MS and not await self.query.instant(sel, now_ms):
            return t_ms, STALE_NAN
        return t_ms, v


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
