"""Recording and alerting rules with Prometheus's semantics (prometheus/rules).

A rule's ``eval`` turns one query result into the samples to store: the recorded series, or
``ALERTS``/``ALERTS_FOR_STATE`` of the active alerts. The alert state machine (pending ->
firing -> resolved, ``for``, ``keep_firing_for``, 15 minutes of resolved alerts kept for the
Alertmanager) is Prometheus's AlertingRule.Eval.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .rulefile import RuleSpec
from .template import TemplateError, alert_template_data, expand

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Sample = tuple[dict[str, str], float]  # one element of an instant vector

RESOLVED_RETENTION_MS = 15 * 60_000  # resolved alerts are still sent this long
ALERT_METRIC, FOR_STATE_METRIC = "ALERTS", "ALERTS_FOR_STATE"


class RuleError(Exception):
    """An evaluation that produced no usable result (the rule's health becomes "err")."""


def label_key(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


@dataclass
class EvalState:
    """What /api/v1/rules shows about a rule's last evaluation."""

    health: str = "unknown"
    last_error: str = ""
    last_eval_s: float = 0.0  # wall clock of the last evaluation (0: never)
    duration_s: float = 0.0

    def record(self, started: float, err: str = "") -> None:
        self.health, self.last_error = ("err", err) if err else ("ok", "")
        self.last_eval_s, self.duration_s = started, time.time() - started


class RecordingRule:
    def __init__(self, spec: RuleSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.state = EvalState()

    def eval(self, vector: list[Sample], ts_ms: int, limit: int) -> list[tuple[Labels, float]]:
        """The recorded samples: ``__name__`` set to the record name, rule labels applied (an
        empty value removes a label); identical label sets are an error, as in Prometheus."""
        out: dict[Labels, float] = {}
        for metric, value in vector:
            lb = dict(metric)
            lb["__name__"] = self.name
            for k, v in self.spec.labels:
                lb[k] = v
            key = label_key(lb)
            if key in out:
                raise RuleError("vector contains metrics with the same labelset after applying "
                                "rule labels")
            out[key] = value
        if limit > 0 and len(out) > limit:
            raise RuleError(f"exceeded limit of {limit} with {len(out)} series")
        return list(out.items())


@dataclass
class Alert:
    labels: Labels
    annotations: Labels
    value: float
    active_at_ms: int
    state: str = "pending"  # pending | firing | inactive
    fired_at_ms: int = 0
    resolved_at_ms: int = 0
    last_sent_ms: int = 0
    valid_until_ms: int = 0
    keep_firing_since_ms: int = 0

    def needs_sending(self, ts_ms: int, resend_delay_ms: int) -> bool:
        if self.state == "pending":
            return False
        if self.resolved_at_ms > self.last_sent_ms:  # resolved since the last send
            return True
        return self.last_sent_ms + resend_delay_ms < ts_ms


@dataclass
class AlertContext:
    """What alert templates see besides the sample: external labels and URL."""

    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""


class AlertingRule:
    def __init__(self, spec: RuleSpec, ctx: AlertContext, restored: bool) -> None:
        self.spec = spec
        self.name = spec.name
        self.ctx = ctx
        self.state = EvalState()
        self.active: dict[Labels, Alert] = {}
        self.restored = restored  # ALERTS series are written only once the for-state is restored

    def _expand(self, text: str, data: dict[str, Any]) -> str:
        try:
            return expand(text, f"__alert_{self.name}", data, self.ctx.external_url)
        except TemplateError as e:
            log.warning("expanding alert template failed", extra={"alert": self.name,
                                                                  "err": str(e)})
            return f"<error expanding template: {e}>"

    def eval(self, vector: list[Sample], ts_ms: int, limit: int) -> list[tuple[Labels, float]]:
        """Advance every alert to ``ts_ms`` and return the ALERTS/ALERTS_FOR_STATE samples."""
        current: dict[Labels, Alert] = {}
        for metric, value in vector:
            data = alert_template_data(dict(metric), self.ctx.external_labels,
                                       self.ctx.external_url, value)
            lb = {k: v for k, v in metric.items() if k != "__name__"}
            for k, v in self.spec.labels:
                lb[k] = self._expand(v, data)
            lb["alertname"] = self.name
            annotations = tuple((k, self._expand(v, data)) for k, v in self.spec.annotations)
            key = label_key(lb)
            if key in current:
                raise RuleError("vector contains metrics with the same labelset after applying "
                                "alert labels")
            current[key] = Alert(labels=key, annotations=annotations, value=value,
                                 active_at_ms=ts_ms)
        for key, a in current.items():
            old = self.active.get(key)
            if old is not None and old.state != "inactive":
                old.value, old.annotations = a.value, a.annotations
            else:
                self.active[key] = a
        out: list[tuple[Labels, float]] = []
        n_active = 0
        for key, a in list(self.active.items()):
            if key not in current:
                keep = False
                if a.state == "firing" and self.spec.keep_firing_for_ms > 0:
                    if not a.keep_firing_since_ms:
                        a.keep_firing_since_ms = ts_ms
                    keep = ts_ms - a.keep_firing_since_ms < self.spec.keep_firing_for_ms
                if a.state == "pending" or (a.resolved_at_ms and
                                            ts_ms - a.resolved_at_ms > RESOLVED_RETENTION_MS):
                    del self.active[key]
                if a.state != "inactive" and not keep:
                    a.state, a.resolved_at_ms = "inactive", ts_ms
                if not keep:
                    continue
            else:
                a.keep_firing_since_ms = 0
            n_active += 1
            if a.state == "pending" and ts_ms - a.active_at_ms >= self.spec.for_ms:
                a.state, a.fired_at_ms = "firing", ts_ms
            if self.restored:
                out.append((self.series_labels(a, ALERT_METRIC, a.state), 1.0))
                out.append((self.series_labels(a, FOR_STATE_METRIC), float(a.active_at_ms // 1000)))
        if limit > 0 and n_active > limit:
            self.active = {}
            raise RuleError(f"exceeded limit of {limit} with {n_active} alerts")
        return out

    def series_labels(self, a: Alert, metric: str, state: str = "") -> Labels:
        lb = dict(self.spec.labels)
        lb.update(a.labels)
        lb["__name__"] = metric
        lb["alertname"] = self.name
        if state:
            lb["alertstate"] = state
        return label_key(lb)

    def to_send(self, ts_ms: int, resend_delay_ms: int, interval_ms: int) -> list[Alert]:
        """Alerts due for the Alertmanager (firing, resend due, or newly resolved), each valid
        for four intervals (two missed evaluations or sends are tolerated)."""
        out = []
        for a in self.active.values():
            if a.needs_sending(ts_ms, resend_delay_ms):
                a.last_sent_ms = ts_ms
                a.valid_until_ms = ts_ms + 4 * max(resend_delay_ms, interval_ms)
                out.append(Alert(**a.__dict__))
        return out

    def alert_state(self) -> str:
        """The rule's state: the most severe of its alerts'."""
        states = {a.state for a in self.active.values()}
        return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"

    def copy_state_from(self, other: "AlertingRule") -> None:
        self.active = other.active
        self.restored = other.restored
        self.state = other.state
