"""The StoreAPI Series request as the store reads it: the usual one decoded in C
(storeapi._wire.series_request) into a plain object, any other by upb.

Why: on a cold call (a new series, caches cold) upb's parse and a dozen reads of its fields by
name cost ~25 us of CPU; the C decoder and the plain attributes here a few. Both our querier's
and Thanos's usual requests take this path; a request with hints or shard_info, unknown fields
or anything malformed is upb's (and so are its errors).
"""
from __future__ import annotations

from storeapi import rpc_pb2
from storeapi._wire import series_request as _decode

# Message fields the plain request never holds: HasField says False (upb's answer for them).
_ABSENT_MESSAGES = frozenset({"hints", "shard_info"})


class PlainSeriesRequest:
    """A SeriesRequest without hints or shard_info, read as StoreServer.series reads upb's.
    ``matchers`` are (type, name, value) tuples (StoreServer's matcher memo key as is), the
    repeated fields tuples."""

    __slots__ = ("min_time", "max_time", "matchers", "max_resolution_window", "aggregates",
                 "partial_response_disabled", "partial_response_strategy", "skip_chunks",
                 "step", "range", "_query_hints", "without_replica_labels", "limit",
                 "response_batch_size")

    def __init__(self, min_time: int, max_time: int, matchers: tuple[tuple[int, str, str], ...],
                 max_resolution_window: int, aggregates: tuple[int, ...],
                 partial_response_disabled: bool, partial_response_strategy: int,
                 skip_chunks: bool, step: int, range: int, query_hints: bool,
                 without_replica_labels: tuple[str, ...], limit: int,
                 response_batch_size: int) -> None:
        self.min_time, self.max_time, self.matchers = min_time, max_time, matchers
        self.max_resolution_window, self.aggregates = max_resolution_window, aggregates
        self.partial_response_disabled = partial_response_disabled
        self.partial_response_strategy, self.skip_chunks = partial_response_strategy, skip_chunks
        self.step, self.range, self._query_hints = step, range, query_hints
        self.without_replica_labels, self.limit = without_replica_labels, limit
        self.response_batch_size = response_batch_size

    def HasField(self, name: str) -> bool:  # noqa: N802 -- protobuf's name
        """As upb's: presence of a message field (query_hints is checked, not kept)."""
        if name == "query_hints":
            return self._query_hints
        if name in _ABSENT_MESSAGES:
            return False
        raise ValueError(f"Field thanos.SeriesRequest.{name} does not have presence.")


def series_request(raw: bytes) -> PlainSeriesRequest | rpc_pb2.SeriesRequest:
    """The Series route's request deserializer: the plain request when the C decoder takes the
    bytes, else upb's message (which raises for bytes it rejects)."""
    fields = _decode(raw)
    if fields is None:
        return rpc_pb2.SeriesRequest.FromString(raw)
    return PlainSeriesRequest(*fields)
