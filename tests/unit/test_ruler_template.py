"""The Go text/template subset of alert labels and annotations, as Prometheus 2.42 expands it."""
from __future__ import annotations

import math

import pytest

from common.gofmt import format_e
from ruler.template import (TemplateError, alert_template_data, expand, go_float, go_printf,
                            humanize, humanize1024, humanize_duration, parse_template)

DATA = alert_template_data({"instance": "host:9100", "job": "node"}, {"replica": "a"},
                           "http://query", 1234567.0)


@pytest.mark.parametrize("text,want", [
    ("{{ $labels.instance }} down", "host:9100 down"),
    ("{{ $value }}", "1.234567e+06"),
    ("{{ $value | humanize }}", "1.235M"),
    ("{{ humanize1024 2048 }}", "2ki"),
    ('{{ printf "%.1f" $value }}', "1234567.0"),
    ("{{ .Labels.job }}/{{ $externalLabels.replica }}/{{ $externalURL }}", "node/a/http://query"),
    ("{{ $labels.nope }}|", "|"),
    ("{{ if gt $value 1e6 }}big{{ else if gt $value 1.0 }}mid{{ else }}small{{ end }}", "big"),
    ("{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}", "instance=host:9100;job=node;"),
    ("{{ with $labels.job }}[{{ . }}]{{ end }}{{ with $labels.x }}no{{ else }}none{{ end }}",
     "[node]none"),
    ("a {{- /* c */ -}} b", "ab"),
    ('{{ reReplaceAll "(.+):.*" "$1" $labels.instance }}', "host"),
    ("{{ $labels.instance | stripPort | toUpper }}", "HOST"),
    ("{{ $x := 5 }}{{ $x }}", "5"),
    ("{{ humanizeDuration 90061 }} {{ humanizePercentage 0.256 }}", "1d 1h 1m 1s 25.6%"),
    ("{{ humanizeTimestamp 0 }}", "1970-01-01 00:00:00 +0000 UTC"),
    ('{{ if match "^host" $labels.instance }}y{{ end }}', "y"),
    ("{{ index $labels \"job\" }} {{ len $labels }}", "node 2"),
    ('{{ title "hello world" }}', "Hello World"),
])
def test_expand(text, want):
    assert expand(text, "t", DATA) == want


@pytest.mark.parametrize("text,err", [
    ("{{ humanise $value }}", 'function "humanise" not defined'),
    ("{{ if $value }}x", "unexpected EOF"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ $labels.x", "unclosed action"),
    ("{{ (1 }}", "unclosed left paren"),
])
def test_parse_errors(text, err):
    with pytest.raises(TemplateError, match=".*" + err.replace("(", r"\(").replace("{", r"\{")):
        parse_template(text, "__alert_A")


def test_bounded():
    with pytest.raises(TemplateError, match="steps|larger"):
        expand("{{ range 100000 }}{{ range 100000 }}x{{ end }}{{ end }}", "t", DATA)
    with pytest.raises(TemplateError, match="nested too deeply"):
        parse_template("{{ if 1 }}" * 1000 + "{{ end }}" * 1000)
    with pytest.raises(TemplateError):
        expand('{{ printf "%s" "x" | printf "%s%s%s" }}' + "{{ $undefined }}", "t", DATA)


def test_go_number_formats():
    assert [go_float(v) for v in (1.0, 0.5, 123456.0, 1e6, 1e-5, 0.0001, -2.5, math.nan,
                                  math.inf)] == ["1", "0.5", "123456", "1e+06", "1e-05", "0.0001",
                                                 "-2.5", "NaN", "+Inf"]
    assert [format_e(v) for v in (1.0, 0.25, 1234.5, -3e-7)] == ["1e+00", "2.5e-01",
                                                                  "1.2345e+03", "-3e-07"]
    assert humanize(0.0012) == "1.2m" and humanize(0) == "0" and humanize1024(1) == "1"
    assert humanize_duration(0.0015) == "1.5ms" and humanize_duration(59.5) == "59.5s"
    assert go_printf("%d%% %s %5.2f|%-4s|", 5, "x", 3.14159, "ab") == "5% x  3.14|ab  |"
