"""Stopping background tasks: every component cancels its loops on shutdown and must wait for
them to finish unwinding (their ``finally`` blocks close files and sockets) without letting the
cancellation -- or a loop's own failure -- escape into the shutdown path."""
from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(*tasks: asyncio.Future | None,
                          more: Iterable[asyncio.Future] = ()) -> None:
    """Cancel every given task (``None`` entries are skipped) and wait until all have ended."""
    pending = [t for t in (*tasks, *more) if t is not None]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
