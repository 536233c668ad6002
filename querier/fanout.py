"""The querier's view of its stores: fan a select out to every StoreAPI endpoint and merge.

The PromQL engine runs in a worker thread and asks for data synchronously; the StoreAPI clients
live on the event loop, so a select hops onto the loop, gathers every endpoint concurrently, and
decodes the returned XOR chunks in C.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

import numpy as np

from querier.promql import Series
from receiver.tsdb.chunkenc import decode_many
from receiver.tsdb.labels import Labels, Matcher
from storeapi.client import StoreClient

log = logging.getLogger(__name__)


class StoreSet:
    """Clients for the configured ``--endpoint`` addresses."""

    def __init__(self, addresses: Sequence[str], timeout_s: float = 120.0) -> None:
        self.clients = [StoreClient(a, timeout_s=timeout_s) for a in addresses]

    async def series(self, mint: int, maxt: int, matchers: list[Matcher], skip_chunks: bool = False):
        results = await asyncio.gather(
            *(c.series(mint, maxt, matchers, skip_chunks=skip_chunks) for c in self.clients))
        return [s for r in results for s in r]

    async def label_names(self, mint: int, maxt: int, matchers: list[Matcher]) -> list[str]:
        results = await asyncio.gather(*(c.label_names(mint, maxt, matchers) for c in self.clients))
        return sorted(set().union(*results)) if results else []

    async def label_values(self, name: str, mint: int, maxt: int, matchers: list[Matcher]) -> list[str]:
        results = await asyncio.gather(
            *(c.label_values(name, mint, maxt, matchers) for c in self.clients))
        return sorted(set().union(*results)) if results else []

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


def merge_raw_series(raw, mint: int, maxt: int) -> list[Series]:
    """Decode each series' chunks; series with equal labels from several stores are merged."""
    by_labels: dict[Labels, list] = {}
    for s in raw:
        by_labels.setdefault(s.labels, []).append(s.chunks)
    out = []
    for lbls, chunk_lists in by_labels.items():
        if len(chunk_lists) == 1:
            ts, vals = decode_many([c[2] for c in chunk_lists[0]], mint, maxt)
        else:
            parts = [decode_many([c[2] for c in cl], mint, maxt) for cl in chunk_lists]
            ts = np.concatenate([p[0] for p in parts])
            vals = np.concatenate([p[1] for p in parts])
            ts, first = np.unique(ts, return_index=True)
            vals = vals[first]
        if len(ts):
            out.append(Series(lbls, ts, vals))
    out.sort(key=lambda s: s.labels)
    return out


class FanoutQueryable:
    """A synchronous ``Queryable`` for the engine thread, backed by the async StoreSet."""

    def __init__(self, stores: StoreSet, loop: asyncio.AbstractEventLoop) -> None:
        self.stores = stores
        self.loop = loop

    def select(self, matchers: list[Matcher], mint: int, maxt: int) -> list[Series]:
        fut = asyncio.run_coroutine_threadsafe(self.stores.series(mint, maxt, matchers), self.loop)
        return merge_raw_series(fut.result(), mint, maxt)
