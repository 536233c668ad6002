"""info(): behind promql-experimental-functions, enriching series from info metrics that share
their instance/job (Prometheus 3.14's info.test holds the detailed cases)."""
from __future__ import annotations

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, PromQLError, Series
from querier.promql.info import quote_meta
from querier.promql.types import EXPERIMENTAL_FUNCTIONS
from receiver.tsdb.labels import Matcher, matches_all

ON = Engine(EngineOptions(features=frozenset((EXPERIMENTAL_FUNCTIONS,))))


class Mem:
    def __init__(self, series: list[Series]) -> None:
        self.series = series
        self.selects: list[list[Matcher]] = []

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[Series]:
        self.selects.append(matchers)
        return [s for s in self.series if matches_all(s.labels, matchers)]


def S(ts: list[int], vals: list[float], **labels: str) -> Series:
    return Series(tuple(sorted(labels.items())), np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64))


def test_info_is_refused_without_experimental_functions():
    q = Mem([S([0], [1.0], __name__="up", instance="a", job="j")])
    with pytest.raises(PromQLError, match='function "info" is not enabled'):
        Engine().instant(q, "info(up)", 0)


def test_info_enriches_many_series_and_fetches_only_their_info_series():
    n = 500
    series = [S([0], [float(i)], __name__="up", instance=f"host-{i}.example:9100", job="node") for i in range(n)]
    series += [S([0], [1.0], __name__="target_info", instance=f"host-{i}.example:9100", job="node", zone=f"z{i % 3}")
               for i in range(n)]
    series.append(S([0], [1.0], __name__="target_info", instance="other", job="node", zone="zz"))
    q = Mem(series)
    r = ON.instant(q, "info(up)", 0)
    got = {dict(l)["instance"]: (dict(l).get("zone"), v) for l, _, v in r.series}
    assert len(got) == n
    assert all(got[f"host-{i}.example:9100"] == (f"z{i % 3}", float(i)) for i in range(n))
    # the info series were selected by the base series' identifying values, not all of them
    info_select = q.selects[-1]
    inst = next(m for m in info_select if m.name == "instance")
    assert not inst.matches("other") and inst.matches("host-7.example:9100")


def test_info_conflicts_are_errors():
    q = Mem([S([0], [1.0], __name__="m", instance="a", job="j"),
             S([0], [1.0], __name__="target_info", instance="a", job="j", v="1"),
             S([0], [1.0], __name__="target_info", instance="a", job="j", v="2")])
    with pytest.raises(PromQLError, match="found duplicate series for info metric"):
        ON.instant(q, "info(m)", 0)


def test_quote_meta_escapes_only_re2_metacharacters():
    assert quote_meta("a.b:9100") == r"a\.b:9100"
    assert quote_meta("x-y z#~") == "x-y z#~"
    assert Matcher("=~", "i", quote_meta("(a|b)+[c]")).matches("(a|b)+[c]")


def test_info_conflict_only_where_the_base_has_samples():
    """Prometheus compares info series only at steps where the first argument has samples."""
    q = Mem([S([120_000], [1.0], __name__="m", instance="a", job="j"),
             S([0], [1.0], __name__="target_info", instance="a", job="j", v="1"),
             S([0], [1.0], __name__="target_info", instance="a", job="j", v="2"),
             S([60_000, 120_000], [1.0, 1.0], __name__="target_info", instance="a", job="j", v="3")])
    r = ON.range(q, "info(m)", 0, 120_000, 60_000)
    assert [(dict(l)["v"], list(ts)) for l, ts, _ in r.series] == [("3", [120_000])]
