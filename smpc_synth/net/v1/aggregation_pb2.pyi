from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AggregationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_KIND_UNSPECIFIED: _ClassVar[AggregationKind]
    AGGREGATION_KIND_CKKS: _ClassVar[AggregationKind]
    AGGREGATION_KIND_PLAIN: _ClassVar[AggregationKind]
    AGGREGATION_KIND_DONE: _ClassVar[AggregationKind]
AGGREGATION_KIND_UNSPECIFIED: AggregationKind
AGGREGATION_KIND_CKKS: AggregationKind
AGGREGATION_KIND_PLAIN: AggregationKind
AGGREGATION_KIND_DONE: AggregationKind

class AggregationHeader(_message.Message):
    __slots__ = ("round", "name", "kind", "count")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    round: int
    name: str
    kind: AggregationKind
    count: int
    def __init__(self, round: _Optional[int] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[AggregationKind, str]] = ..., count: _Optional[int] = ...) -> None: ...
