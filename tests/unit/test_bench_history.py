"""bench/history.py (shared by run_all.py and bench_scale.py) and bench_scale.py's history rows:
the CSV grows by one row per run and keeps older rows readable when columns are added, the
backfilled rows read back as recorded in BENCHMARKS.md, the plot is written, and the generated
block of BENCHMARKS.md lands at the end of the issue 13 section and is replaced in place."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import bench_scale  # noqa: E402
from history import (append_history, git_sha, plot_history, read_history,  # noqa: E402
                     write_generated_block)
from sidebyside import Timing, ratio_table  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def timings(scale: float, thanos: bool) -> list[Timing]:
    """Made-up seconds for every dashboard query at 1 h and 24 h: promring takes half of
    Prometheus's time, except one series (twice), and Thanos four times promring's."""
    out = []
    for h in (1, 24):
        for name, _ in bench_scale.dashboard_queries(scale):
            ref = 0.01 * h
            ours = ref * (2 if name == "one series" else 0.5)
            sides = {"Prometheus": ref, "promring": ours}
            if thanos:
                sides["Thanos"] = 4 * ours
            out.append(Timing(name, h, dict(sides), {k: v / 2 for k, v in sides.items()}))
    return out


def test_append_history_returns_every_row_and_widens_an_older_header(tmp_path: Path):
    path = tmp_path / "h.csv"
    append_history({"date": "d1", "a": "1"}, path, ["date", "a"])
    rows = append_history({"date": "d2", "a": "2", "b": "x"}, path, ["date", "a", "b"])
    assert rows == [{"date": "d1", "a": "1", "b": ""}, {"date": "d2", "a": "2", "b": "x"}]
    assert path.read_text().splitlines()[0] == "date,a,b"
    assert read_history(tmp_path / "absent.csv") == []


def test_history_row_of_a_run_with_thanos():
    rss = {"Prometheus": 100.4, "promring store": 200, "promring query": 300,
           "thanos store": 400, "thanos query": 500}
    row = bench_scale.history_row(timings(0.25, True), rss, [], 0.25, 24, 1894, 3, "abc1234")
    assert set(row) == set(bench_scale.HISTORY_FIELDS)
    # 12 cells at 0.5x and 2 (one series) at 2x: geometric mean 2 ** ((-12 + 2) / 14)
    assert float(row["geomean_warm"]) == pytest.approx(2 ** (-10 / 14), rel=1e-2)
    assert row["one_series_warm"] == "2" and row["thanos_geomean_cold"] == "0.25"
    assert (row["scale"], row["rss_prometheus_mib"], row["rss_thanos_query_mib"]) == (
        "0.25", "100", "500")
    assert row["answers"] == "equal" and row["git_sha"] == "abc1234"
    cells = bench_scale.parse_cells(row["cells"])
    assert cells[("raw", 1)] == (0.5, 0.5) and cells[("one", 24)] == (2.0, 2.0)
    assert len(cells) == 14
    assert bench_scale.parse_cells(row["thanos_cells"])[("avg", 24)] == (0.25, 0.25)


def test_history_row_without_thanos_leaves_its_columns_empty():
    rss = {"Prometheus": 1, "promring store": 2, "promring query": 3}
    row = bench_scale.history_row(timings(1, False), rss, ["x 1 h: differs"], 1, 24, 7600, 3,
                                  "abc1234")
    assert row["thanos_geomean_warm"] == row["thanos_cells"] == row["rss_thanos_store_mib"] == ""
    assert row["answers"] == "1 differ"


def test_backfilled_rows_read_back_as_recorded_in_benchmarks_md():
    rows = read_history(bench_scale.HISTORY_CSV)
    assert all(r["note"] for r in rows[:7]), "every backfilled row names its source"
    issue = rows[0]
    assert "issue 13" in issue["note"] and issue["geomean_warm"] == ""
    cells = bench_scale.parse_cells(issue["cells"])
    assert cells[("sum_rate", 1)] == (None, 2.30) and cells[("one", 24)] == (None, 3.29)
    s5 = [r for r in rows if r["git_sha"] == "2bca55f"]
    assert [(r["scale"], r["geomean_cold"], r["geomean_warm"]) for r in s5] == [
        ("1", "0.81", "0.74"), ("4", "0.84", "0.78")]
    assert bench_scale.parse_cells(s5[0]["cells"])[("one", 24)] == (2.46, 1.50)
    s4 = next(r for r in rows if r["git_sha"] == "b2ede74")
    assert (s4["scale"], s4["geomean_cold"], s4["geomean_warm"], s4["rss_store_mib"]) == (
        "0.25", "1.26", "1.11", "214")


def test_plot_of_the_history_with_a_thanos_run_is_written(tmp_path: Path):
    rss = {"Prometheus": 1, "promring store": 2, "promring query": 3, "thanos store": 4,
           "thanos query": 5}
    rows = read_history(bench_scale.HISTORY_CSV) + [
        bench_scale.history_row(timings(0.25, True), rss, [], 0.25, 24, 1894, 3, "abc1234")]
    panels = bench_scale.history_panels(rows)
    assert [p.ylabel for p in panels] == ["promring ÷ Prometheus 2.42", "one series, warm",
                                          "promring ÷ Thanos"]
    plot_history(rows, panels, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC


def test_ratio_table_rows_and_geometric_means():
    lines = ratio_table(timings(4, True), "promring", "Thanos",
                        [n for n, _ in bench_scale.dashboard_queries(4)])
    assert lines[0] == "| query | 1 h cold | 1 h warm | 24 h cold | 24 h warm |"
    assert "| 4,000 series raw | 0.25x | 0.25x | 0.25x | 0.25x |" in lines
    assert lines[-1] == "Geometric mean: cold **0.25x**, warm **0.25x** (14 query/range pairs)."


def test_generated_block_goes_to_the_end_of_its_section_and_is_replaced_in_place(tmp_path: Path):
    md = tmp_path / "B.md"
    md.write_text("# B\n\nintro\n\n## Other\n\ntext\n\n" f"{bench_scale.BENCHMARKS_SECTION}\n\n"
                  "old\n\n### sub\n\nsub text\n\n## Next\n\nn\n")
    section = bench_scale.BENCHMARKS_SECTION
    write_generated_block("table one", "<!-- s1 -->", "<!-- /s1 -->", md, after_heading=section)
    write_generated_block("table four", "<!-- s4 -->", "<!-- /s4 -->", md, after_heading=section)
    write_generated_block("table one again", "<!-- s1 -->", "<!-- /s1 -->", md,
                          after_heading=section)
    text = md.read_text()
    assert text.count("<!-- s1 -->") == 1 and "table one\n" not in text
    assert text.index("sub text") < text.index("table one again") < text.index("table four") \
        < text.index("## Next")
    write_generated_block("summary", "<!-- b -->", "<!-- /b -->", md)  # run_all's: after the intro
    assert md.read_text().index("intro") < md.read_text().index("summary") < \
        md.read_text().index("## Other")


def test_git_sha_is_clean_when_only_the_history_outputs_changed(tmp_path: Path) -> None:
    """A second bench_scale run of a session (scale 4 after scale 1) measured the same code: the
    history CSV and plot the first run rewrote do not make its row "+dirty"; code does."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    csv_path, png, code = tmp_path / "h.csv", tmp_path / "h.png", tmp_path / "code.py"
    for p in (csv_path, png, code):
        p.write_text("a\n")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    sha = git("rev-parse", "--short", "HEAD").strip()
    csv_path.write_text("a\nb\n")
    png.write_text("b\n")
    assert git_sha((csv_path, png), repo=tmp_path) == sha
    assert git_sha(repo=tmp_path) == sha + "+dirty"
    code.write_text("b\n")
    assert git_sha((csv_path, png), repo=tmp_path) == sha + "+dirty"
