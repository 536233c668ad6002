"""Thanos's path-or-content objstore flags: ``--objstore.config-file`` or inline ``--objstore.config``."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

_ENV_REF = re.compile(r"\$\(([a-zA-Z_0-9]+)\)")  # Kubernetes' $(NAME), as Thanos substitutes


def expand_env(text: str, flag: str) -> str:
    """Thanos's environment substitution in its path-or-content flags (objstore, caches,
    selector and rewrite configs): each ``$(NAME)`` becomes that variable's value, so a secret
    can come from the environment; an unset one is a ValueError naming ``flag``."""
    def value(m: re.Match) -> str:
        v = os.environ.get(m.group(1))
        if v is None:
            raise ValueError(f"--{flag}: found reference to unset environment variable "
                             f'"{m.group(1)}"')
        return v
    return _ENV_REF.sub(value, text) if "$(" in text else text


def add_objstore_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--objstore.config-file", dest="objstore_config_file", default=None,
                   help="Path to the objstore YAML (Thanos's format).")
    p.add_argument("--objstore.config", dest="objstore_config", default=None,
                   help="Alternative to --objstore.config-file: the objstore YAML itself.")
    p.set_defaults(objstore_required=required)


def objstore_yaml(a: argparse.Namespace) -> str | None:
    """The bucket YAML the flags name; SystemExit with Thanos's messages when both or (where
    required) neither are given."""
    path, content = getattr(a, "objstore_config_file", None), getattr(a, "objstore_config", None)
    if path and content:
        raise SystemExit("both --objstore.config-file and --objstore.config flags set.")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise SystemExit(f"cannot read --objstore.config-file: {e}") from None
    else:
        text = content or ""
    try:
        text = expand_env(text, "objstore.config")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not text.strip():
        if getattr(a, "objstore_required", False):
            raise SystemExit("flag --objstore.config-file or --objstore.config is required for "
                             "running this command and content cannot be empty.")
        return None
    return text


def add_path_or_content(p: argparse.ArgumentParser, name: str, what: str) -> None:
    """Thanos's path-or-content flag pair ``--<name>-file`` / ``--<name>`` (a YAML)."""
    dest = name.replace(".", "_").replace("-", "_")
    p.add_argument(f"--{name}-file", dest=f"{dest}_file", default=None,
                   help=f"Path to the YAML file with {what}.")
    p.add_argument(f"--{name}", dest=dest, default=None,
                   help=f"Alternative to --{name}-file: the YAML itself.")


def path_or_content(a: argparse.Namespace, name: str, dest: str = "") -> str:
    """The YAML of an add_path_or_content pair ("" when neither; ``dest`` when the flags'
    dest is not the name's); ValueError when both are given or the file cannot be read."""
    dest = dest or name.replace(".", "_").replace("-", "_")
    path, text = getattr(a, f"{dest}_file"), getattr(a, dest)
    if path and text:
        raise ValueError(f"both --{name}-file and --{name} flags set.")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ValueError(f"cannot read --{name}-file: {e}") from None
    return expand_env(text or "", name)
