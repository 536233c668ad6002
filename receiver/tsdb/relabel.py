"""Prometheus relabel rules of the actions that select (``keep``, ``drop``) or shard
(``hashmod``): what Thanos's ``--selector.relabel-config`` and the bucket tools accept.

Why here: the store gateway and the compactor pick blocks by their external labels with
these rules, and the rewrite tool keeps or drops series with them; all three share one
parser and one evaluator, with Prometheus's semantics (anchored RE2 regex over the source
label values joined by ``separator``; hashmod: the last 8 bytes of the MD5 of that string,
big-endian, modulo ``modulus``, written to ``target_label``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .labels import InvalidRegex, Labels, Matcher, MatchType

# Thanos's SelectorSupportedRelabelActions
SELECTOR_ACTIONS = frozenset({"keep", "drop", "hashmod"})
SERIES_ACTIONS = frozenset({"keep", "drop"})  # rewrite: series kept or deleted whole
_U64 = 1 << 64


@dataclass(frozen=True)
class RelabelConfig:
    """One relabel rule."""
    action: str
    source_labels: tuple[str, ...]
    separator: str
    regex: Matcher  # anchored RE2, as Prometheus's relabel regex
    raw: dict[str, Any]
    target_label: str = ""
    modulus: int = 0

    def apply(self, lbls: dict[str, str]) -> bool:
        """Run the rule on ``lbls`` in place; False when it drops the label set."""
        val = self.separator.join(lbls.get(n, "") for n in self.source_labels)
        if self.action == "keep":
            return self.regex.matches(val)
        if self.action == "drop":
            return not self.regex.matches(val)
        digest = hashlib.md5(val.encode()).digest()
        lbls[self.target_label] = str(int.from_bytes(digest[8:], "big") % self.modulus)
        return True

    def keeps(self, lbls: Labels) -> bool:
        """A keep/drop rule's verdict on a label set (which it leaves as it is)."""
        return self.apply(dict(lbls))


def relabel(lbls: Mapping[str, str], rules: Iterable[RelabelConfig]) -> dict[str, str] | None:
    """The label set after ``rules``, or None when one of them drops it."""
    out = dict(lbls)
    for rc in rules:
        if not rc.apply(out):
            return None
    return out


def parse_relabel_configs(text: str, flag: str, supported: Sequence[str] | frozenset[str]
                          = SELECTOR_ACTIONS, allow_empty: bool = False) -> list[RelabelConfig]:
    """Relabel configs (a YAML list) of the ``supported`` actions; anything else is refused
    with a message naming ``flag`` and the entry. ``allow_empty``: an empty document or
    list means no rules (Thanos's selector flags)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{flag}: not valid YAML: {str(e).splitlines()[0]}") from None
    if doc is None and allow_empty:
        return []
    if not isinstance(doc, list) or (not doc and not allow_empty):
        raise ValueError(f"{flag}: expected a non-empty YAML list of relabel configs")
    return [_parse_one(d, f"{flag}: entry {i}", supported) for i, d in enumerate(doc)]


def _parse_one(d: Any, where: str, supported: Sequence[str] | frozenset[str]) -> RelabelConfig:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a relabel config mapping")
    action = str(d.get("action", "replace")).lower()
    if action not in supported:
        raise ValueError(f"{where}: unsupported relabel action: {action} (supported: "
                         f"{', '.join(sorted(supported))})")
    src = d.get("source_labels") or []
    if not isinstance(src, list) or not src or not all(isinstance(x, str) for x in src):
        raise ValueError(f"{where}: {action} needs source_labels, a list of label names")
    try:
        regex = Matcher(MatchType.RE, "regex", str(d.get("regex", "(.*)")))
    except InvalidRegex as e:
        raise ValueError(f"{where}: invalid regex: {e}") from None
    target, modulus = str(d.get("target_label") or ""), d.get("modulus", 0)
    if action == "hashmod":
        if isinstance(modulus, bool) or not isinstance(modulus, int) or not 0 < modulus < _U64:
            raise ValueError(f"{where}: relabel configuration for hashmod requires non-zero "
                             "modulus")
        if not target:
            raise ValueError(f"{where}: relabel configuration for hashmod action requires "
                             "'target_label' value")
    return RelabelConfig(action, tuple(src), str(d.get("separator", ";")), regex, dict(d),
                         target, int(modulus) if action == "hashmod" else 0)


BLOCK_ID_LABEL = "__block_id"  # Thanos's block.BlockIDLabel, seen by selector rules


def selects_block(ulid: str, ext_labels: Mapping[str, str] | None,
                  rules: Sequence[RelabelConfig]) -> bool:
    """Thanos's label-sharded meta filter: a block is kept unless ``rules`` over its external
    labels plus ``__block_id`` drop it (no rules: every block)."""
    if not rules:
        return True
    lbls = {k: str(v) for k, v in (ext_labels or {}).items() if v != ""}
    lbls[BLOCK_ID_LABEL] = ulid
    return relabel(lbls, rules) is not None
