from storeapi import types_pb2 as _types_pb2
from storeapi import labels_pb2 as _labels_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExemplarsRequest(_message.Message):
    __slots__ = ("query", "start", "end", "partial_response_strategy")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESPONSE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    query: str
    start: int
    end: int
    partial_response_strategy: _types_pb2.PartialResponseStrategy
    def __init__(self, query: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., partial_response_strategy: _Optional[_Union[_types_pb2.PartialResponseStrategy, str]] = ...) -> None: ...

class ExemplarsResponse(_message.Message):
    __slots__ = ("data", "warning")
    DATA_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    data: ExemplarData
    warning: str
    def __init__(self, data: _Optional[_Union[ExemplarData, _Mapping]] = ..., warning: _Optional[str] = ...) -> None: ...

class ExemplarData(_message.Message):
    __slots__ = ("seriesLabels", "exemplars")
    SERIESLABELS_FIELD_NUMBER: _ClassVar[int]
    EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    seriesLabels: _labels_pb2.LabelSet
    exemplars: _containers.RepeatedCompositeFieldContainer[Exemplar]
    def __init__(self, seriesLabels: _Optional[_Union[_labels_pb2.LabelSet, _Mapping]] = ..., exemplars: _Optional[_Iterable[_Union[Exemplar, _Mapping]]] = ...) -> None: ...

class Exemplar(_message.Message):
    __slots__ = ("labels", "value", "ts")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    labels: _labels_pb2.LabelSet
    value: float
    ts: int
    def __init__(self, labels: _Optional[_Union[_labels_pb2.LabelSet, _Mapping]] = ..., value: _Optional[float] = ..., ts: _Optional[int] = ...) -> None: ...
