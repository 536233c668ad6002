"""``--help`` of every subcommand describes every flag and shows its default."""
from __future__ import annotations

import argparse

from promring.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for act in parser._actions:
        if isinstance(act, argparse._SubParsersAction):
            for name, sub in act.choices.items():
                yield from _subcommands(sub, path + (name,))


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fmt = parser._get_formatter()
    fmt.add_argument(action)
    return " ".join(fmt.format_help().split())


def test_every_flag_of_every_subcommand_has_a_help_text_and_shows_its_default():
    checked, missing = 0, []
    for path, parser in _subcommands(build_parser()):
        for act in parser._actions:
            if not act.option_strings or act.dest in ("help", "version"):
                continue
            text = _help_of(parser, act)
            checked += 1
            if not (act.help or "").strip() or act.help.startswith("(default"):
                missing.append((" ".join(path), act.option_strings[0], "no description"))
            elif "(default: " not in text:
                missing.append((" ".join(path), act.option_strings[0], "no default"))
            elif "(default: None)" in text or "(default: )" in text:
                missing.append((" ".join(path), act.option_strings[0], text))
    assert checked > 150 and not missing, missing


def test_the_help_shows_the_actual_default_values():
    subs = dict(_subcommands(build_parser()))
    query = subs[("query",)]
    act = next(a for a in query._actions if "--query.timeout" in a.option_strings)
    assert "(default: 2m)" in _help_of(query, act)
    receive = subs[("receive",)]
    act = next(a for a in receive._actions if "--objstore.config-file" in a.option_strings)
    assert "(default: none)" in _help_of(receive, act)
