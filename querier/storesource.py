"""The querier's own StoreAPI (``--grpc-address``): its fan-out served as a SeriesSource, so a
global querier can sit on top of regional queriers (Thanos's stacked queriers).

Series from several stores are passed on as they are, sorted by labels; a series held by more
than one store appears once per store and the querier above merges them (as it does for
replicas).
"""
from __future__ import annotations

import dataclasses

from receiver.tsdb.exemplars import ExemplarResult
from receiver.tsdb.labels import Labels, Matcher

from common.tls import is_metadata_value

from .fanout import UNBOUNDED, SelectOptions, StoreSet


class SeriesList(list):
    """Series plus the warnings of the fan-out that produced them."""

    warnings: list[str]


class FanoutSource:
    def __init__(self, stores: StoreSet, partial_response: bool) -> None:
        self.stores = stores
        self.opts = SelectOptions(partial_response=partial_response)

    def label_sets(self) -> list[Labels]:
        out: dict[Labels, None] = {}
        for c in self.stores.clients:
            info = self.stores.info_of(c.address)
            for ls in (info.label_sets if info is not None else []):
                out[tuple(ls)] = None
        return list(out)

    def time_range(self) -> tuple[int, int]:
        infos = [self.stores.info_of(c.address) for c in self.stores.clients]
        if not infos or any(i is None for i in infos):
            return UNBOUNDED  # unknown stores: ask this querier for any range
        return min(i.min_time for i in infos), max(i.max_time for i in infos)

    def _for(self, tenant: str) -> SelectOptions:
        """The options of a call from ``tenant`` (the caller's thanos-tenant, which the store
        server hands in): passed on to every endpoint, as Thanos's proxy does."""
        return dataclasses.replace(self.opts, tenant=tenant if is_metadata_value(tenant) else "")

    async def series(self, mint: int, maxt: int, matchers: list[Matcher], skip_chunks: bool,
                     tenant: str = ""):
        warnings: list[str] = []
        raw = await self.stores.series(mint, maxt, matchers, skip_chunks=skip_chunks,
                                       opts=self._for(tenant), warnings=warnings)
        out = SeriesList((tuple(s.labels), list(s.chunks)) for s in raw)
        out.sort(key=lambda s: s[0])
        out.warnings = warnings  # an unreachable store: passed on as a warning frame
        return out

    async def label_names(self, mint: int, maxt: int, matchers: list[Matcher],
                          tenant: str = "") -> list[str]:
        return await self.stores.label_names(mint, maxt, matchers, opts=self._for(tenant))

    async def label_values(self, name: str, mint: int, maxt: int,
                           matchers: list[Matcher], tenant: str = "") -> list[str]:
        return await self.stores.label_values(name, mint, maxt, matchers,
                                              opts=self._for(tenant))


    async def exemplars(self, start: int, end: int, selectors: list[list[Matcher]]
                        ) -> list[ExemplarResult]:
        """The endpoints' exemplars, for a querier stacked above this one (Thanos's proxy)."""
        found = await self.stores.exemplars(selectors, start, end, self.opts)
        return [ExemplarResult(lbls, exs) for lbls, exs in found]
