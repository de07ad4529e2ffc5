from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Effect(_message.Message):
    __slots__ = ("kind", "map", "key", "value", "expire_at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    kind: int
    map: str
    key: bytes
    value: bytes
    expire_at: float
    def __init__(self, kind: _Optional[int] = ..., map: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., expire_at: _Optional[float] = ...) -> None: ...

class Op(_message.Message):
    __slots__ = ("code", "partition", "map", "key", "value", "expect", "ttl", "version", "effects")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPECT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTS_FIELD_NUMBER: _ClassVar[int]
    code: int
    partition: int
    map: str
    key: bytes
    value: bytes
    expect: bytes
    ttl: float
    version: int
    effects: _containers.RepeatedCompositeFieldContainer[Effect]
    def __init__(self, code: _Optional[int] = ..., partition: _Optional[int] = ..., map: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., expect: _Optional[bytes] = ..., ttl: _Optional[float] = ..., version: _Optional[int] = ..., effects: _Optional[_Iterable[_Union[Effect, _Mapping]]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("id", "cluster", "table_version", "ops", "sender")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    id: int
    cluster: str
    table_version: int
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    sender: str
    def __init__(self, id: _Optional[int] = ..., cluster: _Optional[str] = ..., table_version: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ..., sender: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("status", "value", "found", "count", "keys", "values", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: int
    value: bytes
    found: bool
    count: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    message: str
    def __init__(self, status: _Optional[int] = ..., value: _Optional[bytes] = ..., found: _Optional[bool] = ..., count: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., message: _Optional[str] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("id", "table_version", "results")
    ID_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    table_version: int
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, id: _Optional[int] = ..., table_version: _Optional[int] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...
