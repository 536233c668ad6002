"""The ``promring`` command line: Thanos's exact flag names, ``--version`` and defaults in help."""
from __future__ import annotations

import argparse
import re

import pytest

from promring.cli import build_parser


def _all_parsers(p: argparse.ArgumentParser, path=()):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _all_parsers(sp, path + (name,))


def _leaf_commands():
    return [path for path, p in _all_parsers(build_parser())
            if path and not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]


@pytest.mark.parametrize("path", [()] + _leaf_commands(), ids=lambda p: " ".join(p) or "top")
def test_version_on_every_command(path, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*path, "--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("promring, version ")


@pytest.mark.parametrize("path", _leaf_commands(), ids=" ".join)
def test_help_shows_every_flags_default(path):
    parser = dict(_all_parsers(build_parser()))[path]
    text = parser.format_help()
    entries = re.split(r"\n  (?=-)", text[text.index("\noptions:"):])
    for a in parser._actions:
        if a.option_strings and a.default is not argparse.SUPPRESS:
            entry = next(e for e in entries if re.match(re.escape(a.option_strings[0]) + r"[ ,\n]", e))
            assert "(default: " in " ".join(entry.split()), (path, a.option_strings)


@pytest.mark.parametrize("argv", [
    ["query", "--end=127.0.0.1:1"],                          # would have been --endpoint
    ["store", "--objstore.config-file=a.yml", "--objstore.config-fi=x.yml"],
    ["receive", "--receive.hashrings-f=h.json"],
    ["tools", "bucket", "ls", "--objstore.config-f=x"],
])
def test_flag_prefixes_are_not_accepted(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "arguments are required" in err
