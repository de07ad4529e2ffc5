from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Effect(_message.Message):
    __slots__ = ("kind", "map", "key", "value", "expire_at", "stamp")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    STAMP_FIELD_NUMBER: _ClassVar[int]
    kind: int
    map: str
    key: bytes
    value: bytes
    expire_at: float
    stamp: int
    def __init__(self, kind: _Optional[int] = ..., map: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., expire_at: _Optional[float] = ..., stamp: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("id", "cluster", "table_version", "sender", "maps", "codes", "partitions", "map_index", "keys", "values", "expects", "ttls", "versions", "effect_counts", "effect_kinds", "effect_maps", "effect_keys", "effect_values", "effect_expiry", "effect_stamps")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MAP_INDEX_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    EXPECTS_FIELD_NUMBER: _ClassVar[int]
    TTLS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_KINDS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_MAPS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_KEYS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_VALUES_FIELD_NUMBER: _ClassVar[int]
    EFFECT_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    EFFECT_STAMPS_FIELD_NUMBER: _ClassVar[int]
    id: int
    cluster: str
    table_version: int
    sender: str
    maps: _containers.RepeatedScalarFieldContainer[str]
    codes: _containers.RepeatedScalarFieldContainer[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    map_index: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    expects: _containers.RepeatedScalarFieldContainer[bytes]
    ttls: _containers.RepeatedScalarFieldContainer[float]
    versions: _containers.RepeatedScalarFieldContainer[int]
    effect_counts: _containers.RepeatedScalarFieldContainer[int]
    effect_kinds: _containers.RepeatedScalarFieldContainer[int]
    effect_maps: _containers.RepeatedScalarFieldContainer[int]
    effect_keys: _containers.RepeatedScalarFieldContainer[bytes]
    effect_values: _containers.RepeatedScalarFieldContainer[bytes]
    effect_expiry: _containers.RepeatedScalarFieldContainer[float]
    effect_stamps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., cluster: _Optional[str] = ..., table_version: _Optional[int] = ..., sender: _Optional[str] = ..., maps: _Optional[_Iterable[str]] = ..., codes: _Optional[_Iterable[int]] = ..., partitions: _Optional[_Iterable[int]] = ..., map_index: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., expects: _Optional[_Iterable[bytes]] = ..., ttls: _Optional[_Iterable[float]] = ..., versions: _Optional[_Iterable[int]] = ..., effect_counts: _Optional[_Iterable[int]] = ..., effect_kinds: _Optional[_Iterable[int]] = ..., effect_maps: _Optional[_Iterable[int]] = ..., effect_keys: _Optional[_Iterable[bytes]] = ..., effect_values: _Optional[_Iterable[bytes]] = ..., effect_expiry: _Optional[_Iterable[float]] = ..., effect_stamps: _Optional[_Iterable[int]] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("id", "table_version", "statuses", "found", "values", "counts", "messages", "key_counts", "value_counts", "scan_keys", "scan_values", "versions", "ttls")
    ID_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    KEY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SCAN_KEYS_FIELD_NUMBER: _ClassVar[int]
    SCAN_VALUES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TTLS_FIELD_NUMBER: _ClassVar[int]
    id: int
    table_version: int
    statuses: _containers.RepeatedScalarFieldContainer[int]
    found: _containers.RepeatedScalarFieldContainer[bool]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    counts: _containers.RepeatedScalarFieldContainer[int]
    messages: _containers.RepeatedScalarFieldContainer[str]
    key_counts: _containers.RepeatedScalarFieldContainer[int]
    value_counts: _containers.RepeatedScalarFieldContainer[int]
    scan_keys: _containers.RepeatedScalarFieldContainer[bytes]
    scan_values: _containers.RepeatedScalarFieldContainer[bytes]
    versions: _containers.RepeatedScalarFieldContainer[int]
    ttls: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[int] = ..., table_version: _Optional[int] = ..., statuses: _Optional[_Iterable[int]] = ..., found: _Optional[_Iterable[bool]] = ..., values: _Optional[_Iterable[bytes]] = ..., counts: _Optional[_Iterable[int]] = ..., messages: _Optional[_Iterable[str]] = ..., key_counts: _Optional[_Iterable[int]] = ..., value_counts: _Optional[_Iterable[int]] = ..., scan_keys: _Optional[_Iterable[bytes]] = ..., scan_values: _Optional[_Iterable[bytes]] = ..., versions: _Optional[_Iterable[int]] = ..., ttls: _Optional[_Iterable[float]] = ...) -> None: ...
