from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeRequest(_message.Message):
    __slots__ = ("cluster", "subscriber", "map", "values", "entries", "heartbeat_interval")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    subscriber: str
    map: str
    values: bool
    entries: bool
    heartbeat_interval: float
    def __init__(self, cluster: _Optional[str] = ..., subscriber: _Optional[str] = ..., map: _Optional[str] = ..., values: bool = ..., entries: bool = ..., heartbeat_interval: _Optional[float] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("kinds", "partitions", "seqs", "keys", "values", "old_values", "heartbeat", "owned", "owned_seqs", "table_version", "versions", "ttls")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    OWNED_SEQS_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TTLS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    seqs: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    old_values: _containers.RepeatedScalarFieldContainer[bytes]
    heartbeat: bool
    owned: _containers.RepeatedScalarFieldContainer[int]
    owned_seqs: _containers.RepeatedScalarFieldContainer[int]
    table_version: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    ttls: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kinds: _Optional[_Iterable[int]] = ..., partitions: _Optional[_Iterable[int]] = ..., seqs: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., old_values: _Optional[_Iterable[bytes]] = ..., heartbeat: bool = ..., owned: _Optional[_Iterable[int]] = ..., owned_seqs: _Optional[_Iterable[int]] = ..., table_version: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., ttls: _Optional[_Iterable[float]] = ...) -> None: ...

class MapStatsRequest(_message.Message):
    __slots__ = ("cluster", "map")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    map: str
    def __init__(self, cluster: _Optional[str] = ..., map: _Optional[str] = ...) -> None: ...

class MapStatsResponse(_message.Message):
    __slots__ = ("member", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    member: str
    values: _containers.ScalarMap[str, float]
    def __init__(self, member: _Optional[str] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...
