"""Rule file validation: the first problem, in the words of Debian's ``promtool check rules``."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ruler.rulefile import RuleFileError, load_rule_files, parse_model_duration, parse_rule_file

BAD = {
    "bad_record_name": """groups:
  - name: g
    rules:
      - record: "bad name"
        expr: up
""",
    "record_and_alert": """groups:
  - name: g
    rules:
      - record: x
        alert: y
        expr: up
""",
    "neither": """groups:
  - name: g
    rules:
      - expr: up
""",
    "no_expr": """groups:
  - name: g
    rules:
      - record: x
""",
    "bad_duration": """groups:
  - name: g
    rules:
      - alert: A
        expr: up
        for: 5x
""",
    "unknown_group_field": """groups:
  - name: g
    interval: 1m
    foo: 1
    rules: []
""",
    "unknown_rule_field": """groups:
  - name: g
    rules:
      - alert: A
        expr: up
        severity: high
""",
    "repeated_group": """groups:
  - name: g
    rules: []
  - name: g
    rules: []
""",
    "empty_group_name": """groups:
  - name: ""
    rules: []
""",
    "template": """groups:
  - name: g
    rules:
      - alert: A
        expr: up
        labels:
          severity: "{{ humanise $value }}"
""",
    "unclosed_template": """groups:
  - name: g
    rules:
      - alert: A
        expr: up
        annotations:
          summary: "{{ if $value }}x"
""",
    "annotations_in_recording_rule": """groups:
  - name: g
    rules:
      - record: r
        expr: up
        annotations:
          a: b
""",
    "for_in_recording_rule": """groups:
  - name: g
    rules:
      - record: r
        expr: up
        for: 5m
""",
    "bad_label_name": """groups:
  - name: g
    rules:
      - record: r
        expr: up
        labels:
          __name__: x
""",
}


def _promtool_first_error(path: Path) -> str:
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    text = (r.stdout + r.stderr).split("FAILED:\n", 1)[1].strip()
    if text.startswith(f"{path}: yaml: unmarshal errors:"):  # yaml.v3 puts each on a line
        return " ".join(text.split("\n")[:2]).replace(":   line", ": line")
    return text.split("\n")[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_first_error_is_promtools(tmp_path: Path, case: str):
    path = tmp_path / f"{case}.yml"
    path.write_text(BAD[case])
    with pytest.raises(RuleFileError) as e:
        load_rule_files([str(path)])
    assert str(e.value) == _promtool_first_error(path)


def test_unparsable_expression_names_rule_and_position():
    text = "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: sum(\n"
    with pytest.raises(RuleFileError) as e:
        parse_rule_file(text, "f.yml")
    assert str(e.value) == ('f.yml: 5:15: group "g", rule 1, "r": could not parse '
                            'expression: 1:5: parse error: unclosed left parenthesis')


def test_valid_file_and_globs(tmp_path: Path):
    (tmp_path / "a.yml").write_text("""groups:
  - name: one
    interval: 30s
    limit: 10
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: x}
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.instance }} down ({{ $value | humanize }})"}
""")
    (tmp_path / "b.yml").write_text("")  # empty: no groups
    groups = load_rule_files([str(tmp_path / "*.yml"), str(tmp_path / "missing-*.yml")])
    assert [(g.name, g.interval_ms, g.limit, len(g.rules)) for g in groups] == [("one", 30_000, 10, 2)]
    rec, alert = groups[0].rules
    assert (rec.name, rec.alert, rec.labels) == ("job:up:sum", False, (("team", "x"),))
    assert (alert.for_ms, alert.keep_firing_for_ms, alert.alert) == (300_000, 60_000, True)


def test_all_or_nothing_and_bounded(tmp_path: Path):
    (tmp_path / "good.yml").write_text("groups: [{name: g, rules: [{record: r, expr: up}]}]\n")
    (tmp_path / "bad.yml").write_text("groups: [{name: g, rules: [{record: r}]}]\n")
    with pytest.raises(RuleFileError, match="bad.yml"):
        load_rule_files([str(tmp_path / "*.yml")])
    for hostile in ("groups: " + "[" * 10000, "\x00\xff", "groups: !!python/object:os.system x\n",
                    "a: &a [*a]\n", "- 1\n", "groups: 5\n", "groups: [{name: g, rules: 7}]\n"):
        with pytest.raises(RuleFileError):
            parse_rule_file(hostile, "h.yml")


def test_model_duration():
    assert parse_model_duration("1h30m") == 5_400_000
    assert parse_model_duration("0") == 0
    for bad in ("", "5", "1.5h", "5x", "-1m"):
        with pytest.raises(ValueError):
            parse_model_duration(bad)
