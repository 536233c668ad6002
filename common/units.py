"""Flag values in Prometheus/Thanos spellings: durations like ``2h30m`` and sizes like ``32MiB``."""
from __future__ import annotations

import re

_DUR = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DUR_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
           "w": 604_800_000, "y": 31_536_000_000}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?$", re.IGNORECASE)
_SIZE_MUL = {"b": 1, "kb": 1000, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_duration_ms(s: str) -> int:
    """``"5m"`` -> 300000; a bare number is seconds."""
    s = s.strip()
    try:
        return int(float(s) * 1000)
    except (ValueError, OverflowError):  # not a number, or Inf/NaN: not a duration either
        pass
    pos, total = 0, 0
    for m in _DUR.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _DUR_MS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"not a valid duration: {s!r}")
    return total


def parse_bytes(s: str) -> int:
    m = _SIZE.match(s.strip())
    if not m:
        raise ValueError(f"not a valid size: {s!r}")
    return int(float(m.group(1)) * _SIZE_MUL[(m.group(2) or "B").lower()])


def parse_base2_bytes(s: str) -> int:
    """Thanos's byte-size flags (kingpin's Base2Bytes): ``KB`` and ``KiB`` both mean 1024
    bytes, ``MB``/``MiB`` 1024 KiB, and so on; a bare number is bytes."""
    m = _SIZE.match(s.strip())
    if not m:
        raise ValueError(f"not a valid size: {s!r}")
    unit = (m.group(2) or "B").lower()
    return int(float(m.group(1)) * (1 if unit == "b" else _SIZE_MUL[unit[0] + "ib"]))


def parse_label_flag(s: str) -> tuple[str, str]:
    """Thanos's ``--label 'name="value"'``."""
    name, sep, value = s.partition("=")
    if not sep or not name:
        raise ValueError(f"--label must look like name=\"value\", got {s!r}")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return name.strip(), value


_RFC3339 = re.compile(r"^(-?\d{4,})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?"
                      r"([Zz]|[+-]\d\d:\d\d)$")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, also 0)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y: int, m: int) -> int:
    return _days_from_civil(y + (m == 12), m % 12 + 1, 1) - _days_from_civil(y, m, 1)


def parse_time_or_duration(s: str):
    """Thanos's time-or-duration flags (``--min-time``): an RFC3339 time, or a duration
    relative to now such as ``-1d`` or ``2h45m``. Returns a function giving the time in ms
    (a duration is evaluated anew at each call, as Thanos does)."""
    import time
    text = s.strip()
    m = _RFC3339.match(text)
    if m:
        y, mo, d, hh, mm, ss = (int(g) for g in m.groups()[:6])
        if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and hh < 24 and mm < 60
                and ss < 60):
            raise ValueError(f"not a valid time: {s!r}")  # as Go's time.Parse: out of range
        frac = int(round(float(m.group(7) or 0) * 1000))
        tz = m.group(8)
        off = 0 if tz in ("Z", "z") else (1 if tz[0] == "+" else -1) * (
            int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
        ms = ((_days_from_civil(y, mo, d) * 86400 + hh * 3600 + mm * 60 + ss - off) * 1000
              + frac)
        return lambda: ms
    sign = -1 if text.startswith("-") else 1
    dur = parse_duration_ms(text.lstrip("+-")) * sign
    return lambda: int(time.time() * 1000) + dur
