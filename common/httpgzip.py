"""Compressed HTTP answers, negotiated as Prometheus 2.42 does (util/httputil/compression.go):
the first ``gzip`` or ``deflate`` token of Accept-Encoding, compared exactly, so ``gzip;q=0``
(or ``identity``, ``*``) gets the body as it is.

Compressed with ISA-L at level 1 (about 40 us for a one-series answer, as small as zlib's
level 6 at a tenth of its cost) on the event loop up to INLINE_MAX_BYTES, in a worker
thread above that, so neither a thread hop per small answer nor a long stall of the loop.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web
from isal import isal_zlib

MIN_BYTES = 1024  # smaller answers are sent as they are: compressing them gains nothing
INLINE_MAX_BYTES = 256 << 10  # ~1 ms of ISA-L at level 1: larger bodies go to a thread
LEVEL = 1
WBITS = {"gzip": 31, "deflate": 15}  # gzip framing; zlib framing, as Go's compress/zlib


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


CODINGS = {name: Coding(name, wbits) for name, wbits in WBITS.items()}


def negotiate(accept_encoding: str) -> Coding | None:
    """The coding Prometheus answers with: the first comma-separated token that is exactly
    ``gzip`` or ``deflate`` (no q-values: ``gzip;q=0`` is not ``gzip``), else None."""
    if not accept_encoding:
        return None
    for token in accept_encoding.split(","):
        coding = CODINGS.get(token.strip())
        if coding is not None:
            return coding
    return None


def coding_for(request: web.BaseRequest, headers, size: int) -> Coding | None:
    """The coding of an answer of ``size`` bytes to ``request``, or None to send it as it is
    (too small, a HEAD answer with no body, or already encoded)."""
    if size < MIN_BYTES or request.method == "HEAD" or "Content-Encoding" in headers:
        return None
    return negotiate(request.headers.get("Accept-Encoding", ""))


def mark_encoded(headers, coding: Coding) -> None:
    """Content-Encoding, and a Vary line of its own (as Prometheus 3's gzip handler)."""
    headers["Content-Encoding"] = coding.name
    headers.add("Vary", "Accept-Encoding")


async def compressed(coding: Coding, body: bytes) -> bytes:
    """``body`` compressed: on the loop when small, in a worker thread when large."""
    if len(body) <= INLINE_MAX_BYTES:
        return coding.compress(body)
    return await asyncio.to_thread(coding.compress, body)


async def compress_response(request: web.BaseRequest, resp: web.Response) -> None:
    """Replace an unsent whole-body answer's body with its compressed form when the client
    asked for it (Content-Length follows the new body)."""
    body = resp.body
    if not isinstance(body, (bytes, bytearray)):
        return
    coding = coding_for(request, resp.headers, len(body))
    if coding is None:
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
