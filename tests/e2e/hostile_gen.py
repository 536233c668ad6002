"""Generator of hostile Prometheus API requests: what a careless or malicious Grafana user sends.

Each request is ``(path, params)`` for a POST to ``/api/v1/<path>``. The mix covers deep nesting,
huge subquery grids, catastrophic regexes, extreme times / ``@`` / ``offset`` values, huge step
counts, odd strings and random compositions of real functions over the test data (metric ``hm``
with labels ``i``, ``job``, ``v``). Deterministic for a given seed.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

Request = tuple[str, dict[str, str]]

T_DATA = 1_700_000_000  # seconds; the test data starts here
EXTREME_NUMBERS = ["1e18", "-1e18", "1e300", "-1e300", "Inf", "-Inf", "+Inf", "NaN", "0", "-0",
                   "9223372036854775807", "-9223372036854775808", "1e-300", "0x7fffffffffffffff",
                   "1.7976931348623157e308", "4.9e-324", "123456789012345678901234567890"]
DURATIONS = ["1ms", "10ms", "1s", "15s", "1m", "5m", "1h", "1d", "1w", "1y", "100y", "10000d",
             "292y", "99999999999y", "0s", "1h30m", "5m1ms"]
REGEXES = ["(a+)+b", "(a|a)+b", "(a*)*b", "(.*a){25}", "(a|aa)+$", "((a+)+)+c", "(x+x+)+y",
           "a{1000}", "(a{1000}){1000}", "((a{100}){100}){100}", "(?i)A+", ".*.*.*.*.*=.*",
           "a)|(b", "(a", "[", "\\", "(?<=a)b", "(a)\\1", "\\C", "*", ".*", ".+", "", "|",
           "(" * 300 + ")" * 300, "a" * 5000, "|".join(f"v{i}" for i in range(2000)),
           "\\p{Greek}+", "[[:alpha:]]", "\x00", "é+", "\\x{10FFFF}"]
RANGE_FUNCS = ["rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets",
               "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
               "count_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
               "present_over_time", "mad_over_time", "absent_over_time"]
INSTANT_FUNCS = ["abs", "ceil", "floor", "exp", "ln", "log2", "log10", "sqrt", "sgn", "timestamp",
                 "sort", "sort_desc", "absent", "scalar", "histogram_count", "histogram_sum",
                 "deg", "rad", "sinh", "acos"]
AGGRS = ["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar"]
PARAM_AGGRS = ["topk", "bottomk", "quantile", "limitk", "limit_ratio"]
BINOPS = ["+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless",
          "atan2", "> bool", "== bool"]
ODD = ["", " ", "{", "}", "(", ")", "[", "]", "hm[", "hm{", 'hm{v="', "hm{v=~\"\\", "1 +",
       "\x00", "\ufffd", "hm\x00", "é", "🙂{a=\"b\"}", "'", "`", '"' * 1001, "hm offset",
       "hm @", "@", "sum by", "sum by (", "--hm", "+++hm", "hm[5m][5m]", "hm[5m:][5m:]",
       "{__name__=~\".*\"}", "{__name__=~\".+\"}", "{v=\"\"}", "{}", "hm{" + ",".join(
           f'l{i}="x"' for i in range(2000)) + "}", "sum by (" + ",".join(
           f"l{i}" for i in range(5000)) + ") (hm)", "label_replace(hm, \"a\", \"$1$1$1$1\", "
           "\"v\", \"(.*)\")", "count_values(\"x\", hm)", "count_values(\"\\xff\", hm)",
       "histogram_quantile(0.9, hm)", "label_join(hm, \"x\", \"" + "," * 10000 + "\", \"v\", "
           "\"v\", \"v\")"]


class Generator:
    def __init__(self, seed: int = 0) -> None:
        self.r = random.Random(seed)

    def pick(self, xs):
        return self.r.choice(xs)

    # -- expressions ----------------------------------------------------------------------
    def selector(self) -> str:
        r = self.r.random()
        if r < 0.5:
            return "hm"
        if r < 0.7:
            return f'hm{{job="{self.pick(["j0", "j1", "nope"])}"}}'
        if r < 0.9:
            return f'hm{{v{self.pick(["=~", "!~"])}"{self._rx()}"}}'
        return self.pick(['{__name__=~".+"}', '{__name__=~"h.*"}', "nonexistent", 'hm{i!=""}'])

    def _rx(self) -> str:
        return self.pick(REGEXES).replace("\\", "\\\\").replace('"', '\\"')

    def modifiers(self) -> str:
        r = self.r.random()
        if r < 0.7:
            return ""
        if r < 0.85:
            return f" offset {self.pick(['-' , ''])}{self.pick(DURATIONS)}"
        return f" @ {self.pick(EXTREME_NUMBERS + [str(T_DATA), 'start()', 'end()'])}"

    def range_vec(self, depth: int) -> str:
        if depth <= 0 or self.r.random() < 0.6:
            return f"{self.selector()}[{self.pick(DURATIONS)}]{self.modifiers()}"
        step = self.pick(DURATIONS + [""])
        return f"({self.expr(depth - 1)})[{self.pick(DURATIONS)}:{step}]{self.modifiers()}"

    def expr(self, depth: int) -> str:
        if depth <= 0:
            return self.pick([self.selector() + self.modifiers(), self.pick(EXTREME_NUMBERS),
                              "vector(1)", "time()", "pi()"])
        k = self.r.randrange(7)
        d = depth - 1
        if k == 0:
            return f"{self.pick(RANGE_FUNCS)}({self.range_vec(d)})"
        if k == 1:
            return f"{self.pick(INSTANT_FUNCS)}({self.expr(d)})"
        if k == 2:
            by = self.pick(["", " by (job)", " without (i)", " by (v, nope)"])
            return f"{self.pick(AGGRS)}{by}({self.expr(d)})"
        if k == 3:
            return f"{self.pick(PARAM_AGGRS)}({self.pick(EXTREME_NUMBERS + ['1', '0.5', '-1'])}, {self.expr(d)})"
        if k == 4:
            match = self.pick(["", " on (job)", " ignoring (i)", " on () group_left",
                               " on (job) group_right (v)"])
            return f"({self.expr(d)}) {self.pick(BINOPS)}{match} ({self.expr(d)})"
        if k == 5:
            return f"quantile_over_time({self.pick(EXTREME_NUMBERS)}, {self.range_vec(d)})"
        return f"predict_linear({self.range_vec(d)}, {self.pick(EXTREME_NUMBERS)})"

    # -- families of hostile queries ------------------------------------------------------
    def deep(self) -> str:
        n = self.pick([50, 150, 199, 200, 201, 300, 1000, 4250, 10_000])
        shape = self.r.randrange(6)
        if shape == 0:
            return "hm + " * n + "hm"
        if shape == 1:
            return "(" * n + "hm" + ")" * n
        if shape == 2:
            return "abs(" * n + "hm" + ")" * n
        if shape == 3:
            return "-" * n + "hm"
        if shape == 4:
            return "sum(" * n + "hm" + ")" * n
        return "hm" + "[1m:1m]" * n

    def grid(self) -> str:
        inner = self.pick(["hm", "vector(1)", "rate(hm[5m])", "max_over_time(hm[1h:1ms])"])
        fn = self.pick(["max_over_time({})", "count_over_time({})", "quantile_over_time(0.5, {})"])
        return fn.format(f"{inner}[{self.pick(DURATIONS)}:{self.pick(['1ms', '10ms', '1s', '1m'])}]")

    def query(self) -> Request:
        kind = self.r.random()
        if kind < 0.1:
            q = self.deep()
        elif kind < 0.2:
            q = self.grid()
        elif kind < 0.3:
            q = f'count({{v=~"{self._rx()}"}})' if self.r.random() < 0.5 else \
                f'label_replace(hm, "x", "$1", "v", "{self._rx()}")'
        elif kind < 0.4:
            q = self.pick(ODD)
        else:
            q = self.expr(self.r.randrange(1, 5))
        return self.request(q)

    def request(self, q: str) -> Request:
        r = self.r.random()
        if r < 0.55:
            t = str(T_DATA + 600) if self.r.random() < 0.8 else self.pick(EXTREME_NUMBERS)
            return "query", {"query": q, "time": t}
        if r < 0.85:
            start = T_DATA + self.r.randrange(0, 1800)
            span = self.pick([60, 1800, 3600, 86_400, 10 ** 9])
            step = self.pick(["1", "15", "60", "0.001", "1ms", "1e-3", "0", "-1", "NaN", "Inf",
                              "1e300", "3600", "1y"])
            end = self.pick([str(start + span), self.pick(EXTREME_NUMBERS)])
            return "query_range", {"query": q, "start": str(start), "end": end, "step": step}
        sel = q if len(q) < 300 else self.selector()
        if r < 0.95:
            return "series", {"match[]": sel, "start": self.pick(EXTREME_NUMBERS + [str(T_DATA)]),
                              "end": str(T_DATA + 3600)}
        return "labels", {"match[]": sel}


def requests_for(seed: int, n: int) -> Iterator[Request]:
    g = Generator(seed)
    for _ in range(n):
        yield g.query()
