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
    except ValueError:
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


def parse_label_flag(s: str) -> tuple[str, str]:
    """Thanos's ``--label 'name="value"'``."""
    name, sep, value = s.partition("=")
    if not sep or not name:
        raise ValueError(f"--label must look like name=\"value\", got {s!r}")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return name.strip(), value
