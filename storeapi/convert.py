"""Conversions between the StoreAPI messages and promring's label/matcher vocabulary."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from receiver.tsdb.labels import InvalidRegex, Labels, Matcher, MatchType, plain_matcher
from storeapi import labels_pb2, types_pb2

_PB_TO_TYPE: dict[int, MatchType] = {
    types_pb2.LabelMatcher.EQ: MatchType.EQ,
    types_pb2.LabelMatcher.NEQ: MatchType.NEQ,
    types_pb2.LabelMatcher.RE: MatchType.RE,
    types_pb2.LabelMatcher.NRE: MatchType.NRE,
}
_TYPE_TO_PB: dict[MatchType, int] = {v: k for k, v in _PB_TO_TYPE.items()}


MatcherFields = tuple[int, str, str]  # a LabelMatcher's (type, name, value)


def matchers_from_fields(fields: Sequence[MatcherFields]) -> list[Matcher]:
    """Matchers of LabelMatcher (type, name, value) triples (what the store's matcher memo is
    keyed by, and what storeapi.seriesrequest's plain request holds). Raises ValueError on an
    unknown matcher type or a regex that does not compile. The usual set is built in one
    comprehension (three Python lines fewer per matcher on a store's call); a set that fails
    there is built again by ``_checked_matchers``, which names the matcher at fault."""
    try:
        return [plain_matcher(_PB_TO_TYPE[t], n, v) for t, n, v in fields]
    except (KeyError, InvalidRegex):
        return _checked_matchers(fields)


def _checked_matchers(fields: Iterable[MatcherFields]) -> list[Matcher]:
    """``matchers_from_fields`` a matcher at a time, saying which one is unknown or invalid."""
    out: list[Matcher] = []
    for t, n, v in fields:
        mtype = _PB_TO_TYPE.get(t)
        if mtype is None:
            raise ValueError(f"unknown matcher type {t} for label {n!r}")
        try:
            out.append(plain_matcher(mtype, n, v))  # (a regex: compiled)
        except InvalidRegex as e:
            raise ValueError(f"invalid regex {v!r} for label {n!r}: {e}") from e
    return out


def matchers_to_pb(matchers: Iterable[Matcher]) -> list[types_pb2.LabelMatcher]:
    return [types_pb2.LabelMatcher(type=_TYPE_TO_PB[MatchType(m.type)], name=m.name, value=m.value)
            for m in matchers]


def labels_to_pb(lbls: Labels) -> list[labels_pb2.Label]:
    return [labels_pb2.Label(name=n, value=v) for n, v in lbls]


def labels_from_pb(pbs: Iterable[labels_pb2.Label]) -> Labels:
    return tuple([(lb.name, lb.value) for lb in pbs])
