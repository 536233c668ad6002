"""Snappy decompression of large remote-write bodies on a worker thread.

All of an ingestor's CPU work runs on the event-loop thread. cramjam's snappy releases the GIL,
so decompressing a large body on a worker lets a second core do it while the loop decodes and
appends other requests. Decompression changes no state, so requests stay validated completely
before anything is appended, and the WAL/head order is untouched (both happen on the loop).
Small bodies are decompressed inline: there the thread hand-off (~50 µs) costs more than it
saves.
"""
from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .remotewrite import DEFAULT_MAX_DECOMPRESSED_BYTES, decompress_body


@dataclass(frozen=True)
class OffloadOptions:
    min_bytes: int = 16 << 10   # compressed bodies at least this large go to a worker
    workers: int = 2            # bounded: the machine's second core, plus one to keep it fed


class BodyDecompressor:
    """``decompress_body`` off the event loop for large bodies; at most ``workers`` threads.

    Memory stays bounded by what callers already hold: each queued job is one request whose
    body is in memory and whose handler awaits the result (the receive concurrency limit and
    aiohttp's connections bound those)."""

    def __init__(self, opts: OffloadOptions = OffloadOptions()) -> None:
        self.opts = opts
        self._pool: ThreadPoolExecutor | None = None

    async def decompress(self, body: bytes, content_encoding: str | None,
                         content_type: str | None, *,
                         max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> bytes:
        """As ``decompress_body`` (same result and errors), on a worker for large bodies."""
        call = functools.partial(decompress_body, body, content_encoding, content_type,
                                 max_decompressed_bytes=max_decompressed_bytes)
        if len(body) < self.opts.min_bytes or self.opts.workers <= 0:
            return call()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.opts.workers, thread_name_prefix="rw-decompress")
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        """Stop the workers without blocking the loop (a running job finishes on its own)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
