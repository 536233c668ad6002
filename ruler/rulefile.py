"""Prometheus rule files: parsed and validated completely, with ``promtool check rules``'s checks
and error texts (``<line>:<col>: group "g", rule 1, "name": <what>``), before any group changes."""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from querier.promql.parser import ParseError, parse as parse_promql

from .exprstring import ALL_SYNTAX, canonical_query
from .template import TemplateError, parse_template

MAX_RULE_FILE_BYTES = 16 << 20  # a rule file larger than this is refused, not read into memory

_MODEL_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_MS = (31_536_000_000, 604_800_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_GROUP_KEYS = {"name", "interval", "limit", "rules"}
_RULE_KEYS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


class RuleFileError(ValueError):
    """A rule file that cannot be used; the message is one line naming file and position."""


def parse_model_duration(text: str) -> int:
    """Prometheus's model.Duration (``1h30m``, ``0``; no bare numbers) -> milliseconds."""
    if text == "0":
        return 0
    m = _MODEL_DURATION.match(text)
    if not text or m is None:
        raise ValueError(f'not a valid duration string: "{text}"')
    return sum(int(g) * mul for g, mul in zip(m.groups(), _DURATION_MS) if g)


@dataclass(frozen=True)
class RuleSpec:
    """One rule as written; ``name`` is the record or alert name."""

    name: str
    expr: str
    alert: bool
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    query: str = ""  # expr as Prometheus prints it (/api/v1/rules, generatorURL)


@dataclass(frozen=True)
class GroupSpec:
    name: str
    file: str
    interval_ms: int  # 0: the --eval-interval default
    limit: int = 0
    rules: tuple[RuleSpec, ...] = field(default_factory=tuple)


def _pos(node: yaml.Node | None) -> str:
    """``line:col: `` of a node; ``0:0: `` for an absent one (as yaml.v3's zero Node prints)."""
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}: " if node is not None else "0:0: "


def _mapping(node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise RuleFileError(f"{_pos(node)}{what} must be a mapping")
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            raise RuleFileError(f"{_pos(k)}{what}: keys must be strings")
        if k.value in out:
            raise RuleFileError(f'{_pos(k)}mapping key "{k.value}" already defined')
        out[k.value] = (k, v)
    return out


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _scalar(node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise RuleFileError(f"{_pos(node)}{what} must be a string")
    return "" if node.tag.endswith(":null") else str(node.value)


def _string_map(node: yaml.Node | None, what: str) -> dict[str, str]:
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        return {}
    return {k: _scalar(v, f"{what} {k!r}") for k, (_, v) in _mapping(node, what).items()}


def _check_template(text: str, alert: str) -> str | None:
    try:
        parse_template(text, f"__alert_{alert}")
        return None
    except TemplateError as e:
        return str(e)


def _rule_errors(keys: dict[str, tuple[yaml.Node, yaml.Node]]) -> tuple[list[str], RuleSpec | None]:
    """rulefmt's RuleNode.Validate: every problem of one rule, each with its position."""
    errs: list[str] = []
    rec_node = keys.get("record", (None, None))[1]
    alert_node = keys.get("alert", (None, None))[1]
    expr_node = keys.get("expr", (None, None))[1]
    record = _scalar(rec_node, "record") if rec_node is not None else ""
    alert = _scalar(alert_node, "alert") if alert_node is not None else ""
    expr = _scalar(expr_node, "expr") if expr_node is not None else ""
    durations: dict[str, int] = {}
    for key in ("for", "keep_firing_for"):
        node = keys.get(key, (None, None))[1]
        if node is None:
            durations[key] = 0
            continue
        try:
            durations[key] = parse_model_duration(_scalar(node, key))
        except ValueError as e:
            raise RuleFileError(str(e)) from None  # yaml decode error: no position
    labels = _string_map(keys.get("labels", (None, None))[1], "labels")
    annotations = _string_map(keys.get("annotations", (None, None))[1], "annotations")
    if record and alert:
        errs.append(f"{_pos(rec_node)}{_pos(alert_node)}only one of 'record' and 'alert' must be set")
    if not record and not alert:
        errs.append(f"{_pos(rec_node)}one of 'record' or 'alert' must be set")
    if not expr:
        errs.append(f"{_pos(expr_node)}field 'expr' must be set in rule")
    else:
        try:
            parse_promql(expr, ALL_SYNTAX)
        except ParseError as e:
            errs.append(f"{_pos(expr_node)}could not parse expression: {e}")
    if record:
        if annotations:
            errs.append(f"{_pos(rec_node)}invalid field 'annotations' in recording rule")
        if durations["for"]:
            errs.append(f"{_pos(rec_node)}invalid field 'for' in recording rule")
        if durations["keep_firing_for"]:
            errs.append(f"{_pos(rec_node)}invalid field 'keep_firing_for' in recording rule")
        if not _METRIC_NAME.match(record):
            errs.append(f"{_pos(rec_node)}invalid recording rule name: {record}")
    for k in sorted(labels):
        if not _LABEL_NAME.match(k) or k == "__name__":
            errs.append(f"invalid label name: {k}")
    for k in sorted(annotations):
        if not _LABEL_NAME.match(k):
            errs.append(f"invalid annotation name: {k}")
    if alert:
        for kind, values in (("label", labels), ("annotation", annotations)):
            for k in sorted(values):
                why = _check_template(values[k], alert)
                if why:
                    errs.append(f'{kind} "{k}": {why}')
    if errs:
        return errs, None
    return [], RuleSpec(name=alert or record, expr=expr, alert=bool(alert),
                        query=canonical_query(expr),
                        for_ms=durations["for"], keep_firing_for_ms=durations["keep_firing_for"],
                        labels=tuple(sorted(labels.items())),
                        annotations=tuple(sorted(annotations.items())))


def parse_rule_file(text: str, file: str) -> list[GroupSpec]:
    """All groups of one file, or RuleFileError with the first problem (``file: line:col: ...``)."""
    if _CONTROL.search(text):
        raise RuleFileError(f"{file}: yaml: control characters are not allowed")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise RuleFileError(f"{file}: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise RuleFileError(f"{file}: YAML nested too deeply") from None
    if root is None:
        return []
    try:
        return _groups(root, file)
    except RuleFileError as e:
        raise RuleFileError(f"{file}: {e}") from None


def _unknown_field(key: yaml.Node, name: str, typ: str) -> str:
    return (f"yaml: unmarshal errors: line {key.start_mark.line + 1}: field {name} not found "
            f"in type rulefmt.{typ}")


def _groups(root: yaml.Node, file: str) -> list[GroupSpec]:
    top = _mapping(root, "rule file")
    for k, (kn, _) in top.items():
        if k != "groups":
            raise RuleFileError(_unknown_field(kn, k, "RuleGroups"))
    gnode = top.get("groups", (None, None))[1]
    if gnode is None or _is_null(gnode):
        return []
    if not isinstance(gnode, yaml.SequenceNode):
        raise RuleFileError(f"{_pos(gnode)}groups must be a list")
    groups: list[GroupSpec] = []
    seen: set[str] = set()
    for gn in gnode.value:
        g = _mapping(gn, "group")
        for k, (kn, _) in g.items():
            if k not in _GROUP_KEYS:
                raise RuleFileError(_unknown_field(kn, k, "RuleGroup"))
        name = _scalar(g["name"][1], "name") if "name" in g else ""
        if not name:
            raise RuleFileError(f"{_pos(gn)}Groupname must not be empty")
        if name in seen:
            raise RuleFileError(f'{_pos(gn)}groupname: "{name}" is repeated in the same file')
        seen.add(name)
        interval = 0
        if "interval" in g:
            try:
                interval = parse_model_duration(_scalar(g["interval"][1], "interval"))
            except ValueError as e:
                raise RuleFileError(str(e)) from None
        limit = 0
        if "limit" in g:
            try:
                limit = int(_scalar(g["limit"][1], "limit"))
            except ValueError:
                raise RuleFileError(f"{_pos(g['limit'][1])}limit must be an integer") from None
        rnode = g.get("rules", (None, None))[1]
        if rnode is not None and _is_null(rnode):
            rnode = None
        if rnode is not None and not isinstance(rnode, yaml.SequenceNode):
            raise RuleFileError(f"{_pos(rnode)}rules must be a list")
        rule_nodes = rnode.value if rnode is not None else []
        rules: list[RuleSpec] = []
        for i, rn in enumerate(rule_nodes, 1):
            keys = _mapping(rn, "rule")
            for k, (kn, _) in keys.items():
                if k not in _RULE_KEYS:
                    raise RuleFileError(_unknown_field(kn, k, "RuleNode"))
            errs, spec = _rule_errors(keys)
            if errs:
                rname = next((_scalar(keys[k][1], k) for k in ("alert", "record") if k in keys
                              and _scalar(keys[k][1], k)), "")
                first = errs[0]
                m = re.match(r"^((?:\d+:\d+: )*)(.*)$", first)
                raise RuleFileError(f'{m.group(1)}group "{name}", rule {i}, "{rname}": {m.group(2)}')
            rules.append(spec)
        groups.append(GroupSpec(name=name, file=file, interval_ms=interval, limit=limit,
                                rules=tuple(rules)))
    return groups


def expand_rule_files(patterns: list[str]) -> list[str]:
    """The --rule-file globs, expanded (a pattern matching nothing is just no file, as in
    Thanos); a directory stands for nothing (Thanos's default ``rules/``)."""
    files: list[str] = []
    for p in patterns:
        for f in sorted(glob.glob(p)) if glob.has_magic(p) else [p]:
            if Path(f).is_file() and f not in files:
                files.append(f)
    return files


def load_rule_files(patterns: list[str]) -> list[GroupSpec]:
    """Every group of every file, or RuleFileError for the first bad file: all or nothing."""
    groups: list[GroupSpec] = []
    for f in expand_rule_files(patterns):
        path = Path(f)
        try:
            if path.stat().st_size > MAX_RULE_FILE_BYTES:
                raise RuleFileError(f"{f}: larger than {MAX_RULE_FILE_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RuleFileError(f"{f}: {e}") from None
        groups.extend(parse_rule_file(text, f))
    return groups
