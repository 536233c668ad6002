"""Compressed HTTP answers, as Thanos v0.42's querier and query frontend send them (their
gzip handler, klauspost gzhttp): gzip only, when a ``gzip`` token of Accept-Encoding (any
letter case) has no q-value or one above 0, for answers of 1 KiB or more, and ``Vary:
Accept-Encoding`` on every answer, compressed or not. (Prometheus 2.42 differs: deflate too,
exact first tokens, every size, no Vary when plain; a Thanos client sees Thanos's.)

Compressed with ISA-L at level 1 (about 40 us for a one-series answer, as small as zlib's
level 6 at a tenth of its cost) on the event loop up to INLINE_MAX_BYTES, in a worker
thread above that, so neither a thread hop per small answer nor a long stall of the loop.
"""
from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from aiohttp import web
from isal import isal_zlib

MIN_BYTES = 1024  # smaller answers are sent as they are: compressing them gains nothing
INLINE_MAX_BYTES = 256 << 10  # ~1 ms of ISA-L at level 1: larger bodies go to a thread
LEVEL = 1


@dataclass(frozen=True)
class Coding:
    """A negotiated content coding: its header value and zlib window bits."""
    name: str
    wbits: int

    def compress(self, body: bytes) -> bytes:
        return isal_zlib.compress(body, LEVEL, self.wbits)

    def compressor(self):
        """A streaming compressor for a body sent piece by piece."""
        return isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, self.wbits)


GZIP = Coding("gzip", 31)  # zlib window bits of gzip framing


@functools.lru_cache(maxsize=64)
def negotiate(accept_encoding: str) -> Coding | None:
    """gzip when a ``gzip`` token (any letter case) has no q-value or one above 0, else None;
    never deflate, ``*`` or ``x-gzip`` (Thanos's gzhttp). Kept per header value: a client
    sends the same one with every request."""
    for token in accept_encoding.split(","):
        name, _, params = token.partition(";")
        if name.strip().lower() != "gzip":
            continue
        q = 1.0
        for param in params.split(";") if params else ():
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # an unreadable q-value does not accept the coding
        if q > 0:
            return GZIP
    return None


def coding_for(request: web.BaseRequest, headers, size: int) -> Coding | None:
    """The coding of an answer of ``size`` bytes to ``request``, or None to send it as it is
    (too small, a HEAD answer with no body, or already encoded)."""
    if size < MIN_BYTES or request.method == "HEAD" or "Content-Encoding" in headers:
        return None
    return negotiate(request.headers.get("Accept-Encoding", ""))


def mark_vary(headers) -> None:
    """``Vary: Accept-Encoding`` (a line of its own, once), as Thanos's gzip handler puts on
    every answer it wraps."""
    if "Accept-Encoding" not in headers.getall("Vary", ()):
        headers.add("Vary", "Accept-Encoding")


def mark_encoded(headers, coding: Coding) -> None:
    headers["Content-Encoding"] = coding.name
    mark_vary(headers)


async def compressed(coding: Coding, body: bytes) -> bytes:
    """``body`` compressed: on the loop when small, in a worker thread when large."""
    got = compressed_now(coding, body)
    return got if got is not None else await asyncio.to_thread(coding.compress, body)


def compressed_now(coding: Coding, body: bytes) -> bytes | None:
    """``body`` compressed on the loop when it is small enough, else None (for a caller that
    awaits :func:`compressed` only then: a coroutine less per answer)."""
    return coding.compress(body) if len(body) <= INLINE_MAX_BYTES else None


async def compress_response(request: web.BaseRequest, resp: web.Response) -> None:
    """Replace an unsent whole-body answer's body with its compressed form when the client
    asked for it (Content-Length follows the new body); Vary either way."""
    body = resp.body
    if not isinstance(body, (bytes, bytearray)):
        return
    coding = coding_for(request, resp.headers, len(body))
    if coding is None:
        mark_vary(resp.headers)
        return
    resp.body = await compressed(coding, body)
    resp.headers.pop("Content-Length", None)  # a handler's own would be the plain body's
    mark_encoded(resp.headers, coding)


async def send_pieces(request: web.BaseRequest, resp: web.StreamResponse,
                      pieces: list[bytes]) -> None:
    """Prepare ``resp`` and send ``pieces`` (a large answer, so each is compressed in a worker
    thread when the client asked for compression; else Content-Length is their total)."""
    size = sum(map(len, pieces))
    coding = coding_for(request, resp.headers, size)
    if coding is None:
        mark_vary(resp.headers)
        resp.content_length = size
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
    else:
        mark_encoded(resp.headers, coding)
        await resp.prepare(request)
        co = coding.compressor()
        for piece in pieces:
            out = await asyncio.to_thread(co.compress, piece)
            if out:
                await resp.write(out)
        await resp.write(co.flush())
    await resp.write_eof()
