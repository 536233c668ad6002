"""Label sets and label matchers: the vocabulary every component shares.

A label set is a tuple of ``(name, value)`` pairs sorted by name -- hashable, so it can key
dicts, and cheap to compare. Matchers follow PromQL: ``=``, ``!=``, ``=~``, ``!~`` with fully
anchored RE2-style regexes; a matcher on a missing label sees the empty string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import re2
from re2 import _re2

from common.varint import put_uvarint, read_uvarint

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


class InvalidRegex(ValueError):
    """A matcher's regex is not valid Go (RE2) syntax; the message is shaped like Go's."""


_REGEX_META = frozenset("\\.+*?()|[]{}^$")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_MATCH_OPTIONS = re2.Options()
_MATCH_OPTIONS.log_errors = False
_MATCH_OPTIONS.never_capture = True
_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_ESCAPES = re.compile(r"\\.", re.DOTALL)


def _go_syntax_error(expr: str) -> str | None:
    """Why ``expr`` alone is not a Go regexp, or None. Compiled on its own (not inside the
    anchoring group) so that text like ``a)|(b`` cannot escape the group."""
    if any(p == "\\C" for p in _ESCAPES.findall(expr)):  # RE2's any-byte escape; Go has none
        return "invalid escape sequence: `\\C`"
    r = _re2.RE2(expr.encode("utf-8", "surrogatepass"), _OPTIONS)
    return None if r.ok() else _go_wording(r.error().decode("utf-8", "replace"))


# RE2's names for syntax errors -> Go regexp/syntax's ErrorCode texts.
_GO_CODES = {"missing )": "missing closing )", "missing ]": "missing closing ]",
             "no argument for repetition operator": "missing argument to repetition operator",
             "invalid perl operator": "invalid or unsupported Perl syntax",
             "bad repetition operator": "invalid nested repetition operator",
             "invalid repetition size": "invalid repeat count",
             "invalid named capture group": "invalid named capture"}


def _go_wording(re2_error: str) -> str:
    """RE2's ``<code>: <text>`` as Go words it: ``<code>: `<text>```."""
    code, sep, text = re2_error.partition(": ")
    if code == "trailing \\":
        return "trailing backslash at end of expression: ``"
    if not sep:
        return re2_error
    return f"{_GO_CODES.get(code, code)}: `{text}`"


def compile_go_regex(expr: str) -> re2._Regexp:
    """``expr`` as Prometheus compiles it: Go syntax, ``.`` matching newlines, for full matches.

    For label_replace(), which needs capture groups; matchers use :class:`Matcher`."""
    err = _go_syntax_error(expr)
    if err is not None:
        raise InvalidRegex(f"error parsing regexp: {err}")
    return re2.compile("(?s:" + expr + ")", _OPTIONS)


def _regex_test(expr: str) -> Callable[[str], bool]:
    """A full-match test for ``expr``: plain string tests for the shapes dashboards send most
    (``.*``, ``.+``, ``a|b|c``, ``prefix.*``), else RE2, linear in the input."""
    if expr == ".*":
        return lambda v: True
    if expr == ".+":
        return lambda v: v != ""
    if not _REGEX_META.intersection(expr.replace("|", "")):
        return frozenset(expr.split("|")).__contains__
    if expr.endswith(".*") and not _REGEX_META.intersection(expr[:-2]):
        prefix = expr[:-2]
        return lambda v: v.startswith(prefix)
    err = _go_syntax_error(expr)
    if err is not None:
        raise InvalidRegex(f"error parsing regexp: {err}")
    prog = _re2.RE2(("(?s:" + expr + ")").encode("utf-8", "surrogatepass"), _MATCH_OPTIONS)
    if not prog.ok():  # e.g. too large once wrapped
        raise InvalidRegex(f"error parsing regexp: {prog.error().decode('utf-8', 'replace')}")
    match = prog.Match
    # Every match lies in [lo, hi] (bytewise): most values of a label are refused by comparing
    # against that range, far cheaper than a call into RE2.
    ok, lo, hi = prog.PossibleMatchRange(16)
    if not ok:
        lo, hi = b"", None

    def test(v: str) -> bool:
        b = v.encode("utf-8", "surrogatepass")
        if b < lo or (hi is not None and b > hi):
            return False
        return match(_BOTH, b, 0, len(b))[0][0] >= 0
    return test


@dataclass(frozen=True)
class Matcher:
    """One label matcher; regexes are Go's (RE2) and anchored at both ends like Prometheus's.

    An invalid regex raises :class:`InvalidRegex` (a ValueError) at construction."""

    type: MatchType
    name: str
    value: str
    _test: Callable[[str], bool] | None = field(default=None, compare=False, hash=False, repr=False)
    _empty: bool = field(default=False, compare=False, hash=False, repr=False)
    # hash((type, name, value)) worked out once: matchers key caches (a store looks a
    # selection up per block), and the generated hash ran Python code (the enum's too) each time
    _hash: int = field(default=0, init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.type, MatchType):
            object.__setattr__(self, "type", MatchType(self.type))
        if self.type in (MatchType.RE, MatchType.NRE):
            object.__setattr__(self, "_test", _regex_test(self.value))
        object.__setattr__(self, "_empty", self.matches(""))
        object.__setattr__(self, "_hash", hash((self.type, self.name, self.value)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):
        # rebuilt from its fields: str hashes differ between processes
        return Matcher, (self.type, self.name, self.value)

    def matches(self, value: str) -> bool:
        t = self.type
        if t is MatchType.EQ:
            return value == self.value
        if t is MatchType.NEQ:
            return value != self.value
        hit = self._test(value)  # type: ignore[misc]
        return hit if t is MatchType.RE else not hit

    def matches_empty(self) -> bool:
        return self._empty


_new = object.__new__


def plain_matcher(type: MatchType, name: str, value: str) -> Matcher:
    """``Matcher(type, name, value)``, built without the dataclass's __init__ and
    __post_init__ when ``type`` is EQ or NEQ (a MatchType): a query for a new series builds
    its matchers anew in the querier and in the store, and those two steps were a tenth of
    the store's Python lines for the call. Regex types go through Matcher (they compile)."""
    if type is not MatchType.EQ and type is not MatchType.NEQ:
        return Matcher(type, name, value)
    m = _new(Matcher)
    # the fields in __init__'s order, as __post_init__ leaves them
    m.__dict__.update(type=type, name=name, value=value, _test=None,
                      _empty=(value == "") == (type is MatchType.EQ),
                      _hash=hash((type, name, value)))
    return m


def matches_all(lbls: Labels, matchers: list[Matcher]) -> bool:
    d = dict(lbls)
    return all(m.matches(d.get(m.name, "")) for m in matchers)
