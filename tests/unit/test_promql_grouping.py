"""Aggregation grouping by group ids and segment reductions equal a straightforward per-row
grouping with per-group sums, on random label sets with missing labels."""
from __future__ import annotations

import random

import numpy as np
import pytest

from querier.promql import Engine, EngineOptions, Series, aggregate, ast
from querier.promql.grouping import group_index, group_rows
from querier.promql.values import METADATA_LABELS
from receiver.tsdb.labels import matches_all

NAMES = ("job", "instance", "zone", "__type__", "a")


def _random_labels(rng: random.Random, n: int) -> list:
    out = []
    for _ in range(n):
        d = {"__name__": rng.choice(["x", "y"])}
        for name in NAMES:
            if rng.random() < 0.6:  # some rows lack the label
                d[name] = rng.choice(["1", "2", "v"])
        out.append(tuple(sorted(d.items())))
    return list(dict.fromkeys(out))  # series are distinct label sets


def _reference(labels: list, kind, names: list) -> dict:
    """Per row, the kept (name, value) pairs in label order; groups in first-appearance order."""
    groups: dict = {}
    for i, l in enumerate(labels):
        if kind is None:
            key = ()
        elif kind == ast.AggModifierType.By:
            key = tuple(p for p in l if p[0] in names)
        else:
            key = tuple(p for p in l if p[0] not in set(names) | METADATA_LABELS)
        groups.setdefault(key, []).append(i)
    return groups


def _mods(rng: random.Random):
    yield None, []
    for kind in (ast.AggModifierType.By, ast.AggModifierType.Without):
        yield kind, []
        for _ in range(6):
            yield kind, rng.sample(NAMES + ("__name__", "absent"), rng.randint(1, 3))


def test_group_rows_equals_per_row_grouping() -> None:
    rng = random.Random(13)
    for _ in range(40):
        labels = _random_labels(rng, rng.randint(0, 60))
        for kind, names in _mods(rng):
            mod = None if kind is None else ast.AggModifier(kind, names)
            want = _reference(labels, kind, names)
            gid, glabels = group_rows(labels, mod)
            assert glabels == list(want), (kind, names)
            assert [list(np.nonzero(gid == g)[0]) for g in range(len(glabels))] == list(want.values())
            got = group_index(labels, mod)
            assert list(got) == list(want)
            assert [list(v) for v in got.values()] == list(want.values())


class Mem:
    """Random series; some stop half way so rows are absent at later steps."""

    def __init__(self, rng: random.Random, labels: list) -> None:
        specials = [np.nan, np.inf, -np.inf, 0.0, -0.0]
        self.series = []
        for l in labels:
            end = rng.choice([600_000, 1_200_000])
            ts = np.arange(0, end + 1, 60_000, dtype=np.int64)
            v = np.round(np.array([rng.uniform(-50, 50) for _ in ts]), 1)
            for j in range(len(v)):
                if rng.random() < 0.05:
                    v[j] = rng.choice(specials)
            self.series.append(Series(l, ts, v))

    def select(self, matchers, mint, maxt):  # sorted, as the engine's row order then is the output's
        return sorted((s for s in self.series if matches_all(s.labels, matchers)), key=lambda s: s.labels)


def _per_group(op: str, rows: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One group's values per step, summed in row order (as Prometheus's engine)."""
    out, has = np.zeros(rows.shape[1]), present.any(0)
    with np.errstate(all="ignore"):
        for t in range(rows.shape[1]):
            xs = [rows[i, t] for i in range(len(rows)) if present[i, t]]
            s = 0.0
            for x in xs:
                s += x
            if op == "sum":
                out[t] = s + 0.0
            elif op == "count":
                out[t] = len(xs)
            elif op == "avg":
                out[t] = s / len(xs) if xs else np.nan
            elif op == "group":
                out[t] = 1.0
            elif op in ("min", "max"):
                nums = [x for x in xs if not np.isnan(x)]
                out[t] = (min(nums) if op == "min" else max(nums)) if nums else np.nan
    return out, has


@pytest.mark.parametrize("op", ["sum", "count", "avg", "group", "min", "max"])
@pytest.mark.parametrize("cells", [1 << 30, 1, 100])
def test_segment_aggregation_equals_per_group_reduction(op: str, cells: int, monkeypatch) -> None:
    """Over all groups at once, and over a few groups at a time (aggregate.AGG_CELLS: 1 is a
    group at a time, 100 about five rows of 21 steps), the Kahan check a few values at a time."""
    monkeypatch.setattr(aggregate, "AGG_CELLS", cells)
    monkeypatch.setattr(aggregate, "KAHAN_BLOCK", 1 << 30 if cells > 100 else 7)
    rng = random.Random(hash(op) & 0xFFFF)
    eng = Engine(EngineOptions())
    steps = np.arange(0, 1_200_001, 60_000)
    for _ in range(4):
        mem = Mem(rng, _random_labels(rng, 40))
        raw = eng.range(mem, '{__name__=~"x|y"}', 0, 1_200_000, 60_000).series
        labels = [l for l, _, _ in raw]
        vals = np.zeros((len(raw), len(steps)))
        pres = np.zeros((len(raw), len(steps)), bool)
        for i, (_, ts, vs) in enumerate(raw):
            pos = np.searchsorted(steps, ts)
            vals[i, pos], pres[i, pos] = vs, True
        for kind, names in _mods(rng):
            mod = "" if kind is None else f"{kind.value} ({', '.join(names)})"
            got = {l: (ts, vs) for l, ts, vs in eng.range(mem, f'{op} {mod} ({{__name__=~"x|y"}})', 0,
                                                          1_200_000, 60_000).series}
            want = _reference(labels, kind, names)
            assert set(got) == set(want), mod
            for key, idx in want.items():
                w, has = _per_group(op, vals[idx], pres[idx])
                ts, vs = got[key]
                assert list(ts) == list(steps[has]), (mod, key)
                np.testing.assert_array_equal(vs, w[has], err_msg=f"{op} {mod} {key}")


def test_group_ids_in_c_equal_per_row_grouping_at_scale() -> None:
    """The C interning (querier.promql._groupc) against the per-row reference on thousands of
    rows and groups, names shared or not between rows (as the store client's decoder shares
    them); rows that are not tuples of pairs go the Python way with the same result."""
    from querier.promql._groupc import group_ids
    rng = random.Random(3)
    def row() -> tuple:
        zone = (("zone", "a"),) if rng.random() < 0.3 else ()
        return (("__name__", "x"), ("instance", f"i-{rng.randrange(3000)}"),
                ("job", f"j{rng.randrange(7)}"), ("le", rng.choice(["0.1", "1", "+Inf"]))) + zone
    labels = list(dict.fromkeys(row() for _ in range(6000)))
    # every other row with str objects of its own (equal, not identical, to the others')
    labels = [tuple(("".join(n), "".join(v)) for n, v in l) if i % 2 else l for i, l in enumerate(labels)]
    for kind, names in [(ast.AggModifierType.By, ["job"]), (ast.AggModifierType.By, ["le", "job", "zone"]),
                        (ast.AggModifierType.Without, ["le"]), (ast.AggModifierType.By, ["instance", "job"]),
                        (ast.AggModifierType.Without, [])]:
        mod = ast.AggModifier(kind, names)
        want = _reference(labels, kind, names)
        assert group_ids(labels, *_names_keep(mod)) is not None  # the C path is the one tested
        gid, glabels = group_rows(labels, mod)
        assert glabels == list(want), (kind, names)
        assert np.array_equal(gid, np.concatenate([np.full(len(v), g) for g, v in enumerate(want.values())])[
            np.argsort(np.concatenate(list(want.values())), kind="stable")])
        as_lists = [[list(p) for p in l] for l in labels]
        assert group_ids(as_lists, *_names_keep(mod)) is None
        gid2, glabels2 = group_rows([tuple(map(tuple, l)) for l in as_lists], mod)
        assert glabels2 == glabels and np.array_equal(gid2, gid)


def _names_keep(mod):
    from querier.promql.grouping import kept_names
    return kept_names(mod)


def _needs_kahan_whole(x: np.ndarray) -> bool:
    """The check over the whole array at once (as before it went a block at a time)."""
    if not x.size:
        return False
    ax = np.abs(x)
    ax = ax[np.isfinite(ax)]
    if not ax.size:
        return False
    mx = ax.max()
    return bool(np.count_nonzero(ax < mx / 2.0 ** 40) > np.count_nonzero(ax == 0))


@pytest.mark.parametrize("block", [1, 5, 64, 1 << 30])
def test_kahan_check_a_block_at_a_time_equals_the_whole_check(block: int, monkeypatch) -> None:
    monkeypatch.setattr(aggregate, "KAHAN_BLOCK", block)
    rng = np.random.default_rng(block)
    verdicts = set()
    for _ in range(300):
        shape = (int(rng.integers(0, 6)), int(rng.integers(1, 9)))
        x = rng.choice([0.0, 1.0, 1e-13, -3e20, 2.5, np.nan, np.inf, -np.inf, 1e30], size=shape)
        p = rng.random(shape) < 0.7
        want = _needs_kahan_whole(np.where(p, x, 0.0))
        assert aggregate.needs_kahan(x, p) == want
        assert aggregate.needs_kahan(x.ravel()) == _needs_kahan_whole(x.ravel())
        verdicts.add(want)
    assert verdicts == {True, False}
