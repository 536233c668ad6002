from storeapi import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricMetadataRequest(_message.Message):
    __slots__ = ("metric", "limit", "partial_response_strategy")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    metric: str
    limit: int
    partial_response_strategy: _types_pb2.PartialResponseStrategy
    def __init__(self, metric: _Optional[str] = ..., limit: _Optional[int] = ..., partial_response_strategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ...) -> None: ...

class MetricMetadataResponse(_message.Message):
    __slots__ = ("metadata", "warning")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    metadata: MetricMetadata
    warning: str
    def __init__(self, metadata: _Optional[_Union[MetricMetadata, _Mapping]] = ..., warning: _Optional[str] = ...) -> None: ...

class MetricMetadata(_message.Message):
    __slots__ = ("metadata",)
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricMetadataEntry
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricMetadataEntry, _Mapping]] = ...) -> None: ...
    METADATA_FIELD_NUMBER: _ClassVar[int]
    metadata: _containers.MessageMap[str, MetricMetadataEntry]
    def __init__(self, metadata: _Optional[_Mapping[str, MetricMetadataEntry]] = ...) -> None: ...

class MetricMetadataEntry(_message.Message):
    __slots__ = ("metas",)
    METAS_FIELD_NUMBER: _ClassVar[int]
    metas: _containers.RepeatedCompositeFieldContainer[Meta]
    def __init__(self, metas: _Optional[_Iterable[_Union[Meta, _Mapping]]] = ...) -> None: ...

class Meta(_message.Message):
    __slots__ = ("type", "help", "unit")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    type: str
    help: str
    unit: str
    def __init__(self, type: _Optional[str] = ..., help: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...
