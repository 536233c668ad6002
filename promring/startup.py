"""Start-up errors for operators: one line on stderr and a non-zero exit, never a traceback.

A mistake in a flag or a config file is the operator's to fix, so the line says what is wrong
and where; anything unexpected is still one line, with the full traceback only at
``--log.level=debug`` (where a developer asked for it).
"""
from __future__ import annotations

import argparse
import errno
import sys
import traceback
from collections.abc import Callable

from promring.flagcheck import FlagError


def describe(e: BaseException) -> str:
    """One line saying what went wrong, without Python internals where the cause is known."""
    if isinstance(e, OSError):
        where = f" {e.filename}" if e.filename else ""
        if e.errno == errno.EADDRINUSE:
            return f"cannot listen: address already in use{where} ({e.strerror or e})"
        if e.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                       errno.EROFS, errno.ENOSPC, errno.EEXIST):
            return f"{e.strerror}:{where}" if where else str(e)
    if isinstance(e, ValueError):  # config errors (ConfigError, WebConfigError, ...) are these
        return " ".join(str(e).split())
    text = " ".join(str(e).split())
    return (f"unexpected {type(e).__name__}: {text} (run with --log.level=debug for the "
            "traceback)")


def report(a: argparse.Namespace, e: BaseException) -> int:
    """Print ``e`` as one line (plus the traceback at debug level); the exit status to use."""
    if getattr(a, "log_level", "info") == "debug":
        traceback.print_exception(e, file=sys.stderr)
    prefix = " ".join(x for x in ("promring", getattr(a, "command", None)) if x)
    kind = "" if isinstance(e, FlagError) else " error:"
    print(f"{prefix}:{kind} {describe(e)}", file=sys.stderr)
    sys.stderr.flush()
    return 2 if isinstance(e, FlagError) else 1


def run_reporting_errors(a: argparse.Namespace, run: Callable[[argparse.Namespace], None]) -> None:
    """``run(a)``; any exception that escapes becomes one line and a non-zero exit."""
    try:
        run(a)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the catch-all the operator sees instead of a traceback
        sys.exit(report(a, e))
