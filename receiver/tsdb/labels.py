"""Label sets and label matchers: the vocabulary every component shares.

A label set is a tuple of ``(name, value)`` pairs sorted by name -- hashable, so it can key
dicts, and cheap to compare. Matchers follow PromQL: ``=``, ``!=``, ``=~``, ``!~`` with fully
anchored RE2-style regexes; a matcher on a missing label sees the empty string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from common.varint import put_uvarint, read_uvarint
from enum import Enum

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = "__name__"

# Prometheus's staleness marker: a NaN with this exact bit pattern.
STALE_NAN_BITS = 0x7FF0000000000002


def labels_from_dict(d: dict[str, str]) -> Labels:
    """Build a sorted label set, dropping empty values as Prometheus does."""
    return tuple(sorted((k, v) for k, v in d.items() if v != ""))


def labels_get(lbls: Labels, name: str) -> str:
    for k, v in lbls:
        if k == name:
            return v
    return ""


def encode_labels_key(lbls: Labels) -> bytes:
    """Canonical byte key for a label set: for each pair, uvarint(len) name uvarint(len) value.

    The remote-write decoder (receiver/_rwdecode.c) produces exactly this encoding, so the head
    can map request series to refs with one dict lookup per series.
    """
    out = bytearray()
    for name, value in lbls:
        for s in (name, value):
            b = s.encode()
            put_uvarint(out, len(b))
            out += b
    return bytes(out)


def decode_labels_key(key: bytes) -> Labels:
    """Inverse of :func:`encode_labels_key`; ValueError (incl. UnicodeDecodeError) if ``key``
    is not one."""
    parts: list[str] = []
    i, n = 0, len(key)
    while i < n:
        ln, i = read_uvarint(key, i, "label key")
        if ln > n - i:
            raise ValueError("label key: string runs past the end")
        parts.append(key[i:i + ln].decode())
        i += ln
    if len(parts) % 2:
        raise ValueError("label key: a name without a value")
    return tuple(zip(parts[0::2], parts[1::2]))


class MatchType(str, Enum):
    EQ = "="
    NEQ = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    """One label matcher; regexes are anchored at both ends like Prometheus's."""

    type: MatchType
    name: str
    value: str
    _re: re.Pattern | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.type, MatchType):
            object.__setattr__(self, "type", MatchType(self.type))
        if self.type in (MatchType.RE, MatchType.NRE):
            object.__setattr__(self, "_re", re.compile(convert_go_regex(self.value), re.DOTALL))

    def matches(self, value: str) -> bool:
        t = self.type
        if t is MatchType.EQ:
            return value == self.value
        if t is MatchType.NEQ:
            return value != self.value
        hit = self._re.fullmatch(value) is not None  # type: ignore[union-attr]
        return hit if t is MatchType.RE else not hit

    def matches_empty(self) -> bool:
        return self.matches("")


def convert_go_regex(expr: str) -> str:
    """Translate the few RE2 spellings Python's ``re`` reads differently."""
    # RE2 named groups (?P<name>...) are valid in Python too; \z is RE2's end of text.
    return scope_inline_flags(expr.replace(r"\z", r"\Z"))


def scope_inline_flags(rx: str) -> str:
    """RE2 lets "(?i)" appear mid-pattern (it applies to the rest of the enclosing group);
    Python only accepts it at the start, so rewrite it as a scoped "(?i:...)" group."""
    if "(?" not in rx[1:]:
        return rx
    out: list[str] = []
    closers: list[int] = [0]  # scoped groups to close at the end of each nesting level
    i = 0
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            out.append(rx[i:i + 2])
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < len(rx) and rx[j] == "^":
                j += 1
            if j < len(rx) and rx[j] == "]":
                j += 1
            while j < len(rx) and rx[j] != "]":
                j += 2 if rx[j] == "\\" else 1
            out.append(rx[i:j + 1])
            i = j + 1
            continue
        if c == "(":
            m = re.match(r"\(\?([imsU-]+)\)", rx[i:])
            if m and i > 0:
                out.append(f"(?{m[1]}:")
                closers[-1] += 1
                i += len(m[0])
                continue
            closers.append(0)
            out.append(c)
            i += 1
            continue
        if c == ")":
            out.append(")" * closers.pop() + ")")
            if not closers:
                closers.append(0)
            i += 1
            continue
        if c == "|" and closers[-1]:
            out.append(")" * closers[-1] + "|")
            closers[-1] = 0
            i += 1
            continue
        out.append(c)
        i += 1
    out.append(")" * closers[-1])
    return "".join(out)


def matches_all(lbls: Labels, matchers: list[Matcher]) -> bool:
    d = dict(lbls)
    return all(m.matches(d.get(m.name, "")) for m in matchers)
