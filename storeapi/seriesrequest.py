"""The StoreAPI Series request as the store reads it: the usual one decoded in C
(storeapi._wire.series_request) into a plain object, any other by upb.

Why: on a cold call (a new series, caches cold) upb's parse and a dozen reads of its fields by
name cost ~25 us of CPU; the C decoder and the plain attributes here a few. Both our querier's
and Thanos's usual requests take this path; a request with hints or shard_info, unknown fields
or anything malformed is upb's (and so are its errors).
"""
from __future__ import annotations

from typing import NamedTuple

from storeapi import rpc_pb2
from storeapi._wire import series_request as _decode

# Message fields the plain request never holds: HasField says False (upb's answer for them).
_ABSENT_MESSAGES = frozenset({"hints", "shard_info"})


class PlainSeriesRequest(NamedTuple):
    """A SeriesRequest without hints or shard_info, read as StoreServer.series reads upb's.
    ``matchers`` are (type, name, value) tuples (StoreServer's matcher memo key as is), the
    repeated fields tuples.

    A named tuple: series_request makes it from the decoder's tuple of fields in C (a plain
    class's ``__init__`` was eight Python lines of every cold call), its fields read by name
    in C as slots are."""

    min_time: int
    max_time: int
    matchers: tuple[tuple[int, str, str], ...]
    max_resolution_window: int
    aggregates: tuple[int, ...]
    partial_response_disabled: bool
    partial_response_strategy: int
    skip_chunks: bool
    step: int
    range: int
    has_query_hints: bool  # (upb's query_hints is a message: only its presence is kept)
    without_replica_labels: tuple[str, ...]
    limit: int
    response_batch_size: int

    def HasField(self, name: str) -> bool:  # noqa: N802 -- protobuf's name
        """As upb's: presence of a message field (query_hints is checked, not kept); the
        fields never held asked first (a Series call asks for two of them)."""
        if name in _ABSENT_MESSAGES:
            return False
        if name == "query_hints":
            return self.has_query_hints
        raise ValueError(f"Field thanos.SeriesRequest.{name} does not have presence.")


_new = tuple.__new__  # (the named tuple's own __new__ is a Python call)


def series_request(raw: bytes) -> PlainSeriesRequest | rpc_pb2.SeriesRequest:
    """The Series route's request deserializer: the plain request when the C decoder takes the
    bytes, else upb's message (which raises for bytes it rejects)."""
    fields = _decode(raw)
    if fields is None:
        return rpc_pb2.SeriesRequest.FromString(raw)
    return _new(PlainSeriesRequest, fields)
