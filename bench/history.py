"""Recording benchmark runs, shared by bench/run_all.py and bench/bench_scale.py: one CSV row per
run (so a trend survives across sessions), a plot of chosen columns over the runs, the git
revision that was measured, and the generated blocks of BENCHMARKS.md."""
from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_sha(outputs: Sequence[Path] = (), repo: Path = REPO) -> str:
    """Short sha of HEAD, ``+dirty`` when tracked files differ from it (the run measured those);
    ``outputs``, the history files a run of the same session already rewrote, do not count."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True,
                              text=True).stdout.strip()
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    skip = [f":(exclude){p.resolve().relative_to(repo.resolve())}" for p in outputs]
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *skip)
    return sha + ("+dirty" if changed else "")


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_history(row: dict, path: Path, fields: Sequence[str]) -> list[dict]:
    """Appends ``row`` and returns every row. A file written with fewer columns is rewritten
    with ``fields`` as its header first, so adding a column never breaks older runs."""
    rows = read_history(path)
    if rows and list(rows[0].keys()) != list(fields):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        if new:
            w.writeheader()
        w.writerow(row)
    return read_history(path)


@dataclass
class Line:
    """One plotted line: ``value`` gives a row's y or None where the row has no point."""
    label: str
    value: Callable[[dict], float | None]
    style: dict = field(default_factory=dict)


@dataclass
class Panel:
    ylabel: str
    lines: list[Line]
    title: str = ""
    log: bool = False
    reference: float | None = None  # a horizontal dashed line, e.g. 1.0 for "same as Prometheus"


def column(key: str, scale: float = 1.0) -> Callable[[dict], float | None]:
    """A row's ``key`` as a float (divided by ``scale``), None when empty."""
    return lambda r: float(r[key]) / scale if r.get(key) else None


def run_label(row: dict) -> str:
    return f"{(row.get('date') or 'undated')[:10]}\n{row.get('git_sha') or ''}"


def plot_history(rows: list[dict], panels: list[Panel], path: Path) -> None:
    """One panel per ``panels`` entry over the runs in file order, written as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    x = list(range(len(rows)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.5 * len(panels) + 0.5), sharex=True,
                             squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        for line in panel.lines:
            pts = [(i, y) for i, r in zip(x, rows) if (y := line.value(r)) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=line.label,
                        **{"marker": "o", **line.style})
        if panel.reference is not None:
            ax.axhline(panel.reference, color="grey", lw=0.8, ls="--")
        if panel.log:
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_locator(
                matplotlib.ticker.LogLocator(base=2, subs=(1, 1.25, 1.5, 1.75)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel(panel.ylabel)
        if panel.title:
            ax.set_title(panel.title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xticks(x, [run_label(r) for r in rows], fontsize=7, rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_generated_block(section: str, begin: str, end: str, path: Path,
                          after_heading: str | None = None) -> None:
    """Replaces the text between the ``begin``/``end`` markers of ``path``. The first time, the
    block goes at the end of the ``## `` section whose heading starts with ``after_heading``
    (or after the file's intro when None or not found)."""
    text = path.read_text()
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text[text.index(begin):]:
        at = text.index(begin)
        text = text[:at] + block + text[text.index(end, at) + len(end):]
    else:
        start = text.find(f"\n{after_heading}") if after_heading else -1
        at = text.find("\n## ", start + 1) if start >= 0 else text.find("\n## ")
        if start >= 0 and at < 0:  # the section is the file's last
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        else:
            at = len(text) if at < 0 else at + 1
            text = text[:at] + block + "\n\n" + text[at:]
    path.write_text(text)
