"""``python -m compactor`` -- the compactor alone (``promring compact`` takes the same flags).

Exits 0 after a clean pass, 1 when a group was halted (as Thanos does without ``--wait``).
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from common.logs import setup_logging

from .compactor import Compactor
from .config import add_compact_flags, cli_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="promring compact")
    add_compact_flags(p)
    p.add_argument("--log.level", dest="log_level", default="info")
    p.add_argument("--log.format", dest="log_format", default="logfmt")
    a = p.parse_args(argv)
    setup_logging(a.log_level, a.log_format)
    res = asyncio.run(Compactor(cli_config(a)).run())
    return 1 if res.halted else 0


if __name__ == "__main__":
    sys.exit(main())
