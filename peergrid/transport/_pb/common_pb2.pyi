from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MemberInfo(_message.Message):
    __slots__ = ("uuid", "address", "weight", "leaving")
    UUID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    address: str
    weight: float
    leaving: bool
    def __init__(self, uuid: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[float] = ..., leaving: bool = ...) -> None: ...

class MemberList(_message.Message):
    __slots__ = ("version", "master_uuid", "members", "cluster", "origin", "lost_at_ms", "served_at_ms", "quorum_lost")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MASTER_UUID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    LOST_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SERVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_LOST_FIELD_NUMBER: _ClassVar[int]
    version: int
    master_uuid: str
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    cluster: str
    origin: str
    lost_at_ms: int
    served_at_ms: int
    quorum_lost: bool
    def __init__(self, version: _Optional[int] = ..., master_uuid: _Optional[str] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., cluster: _Optional[str] = ..., origin: _Optional[str] = ..., lost_at_ms: _Optional[int] = ..., served_at_ms: _Optional[int] = ..., quorum_lost: bool = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ok", "reason")
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    reason: str
    def __init__(self, ok: bool = ..., reason: _Optional[str] = ...) -> None: ...
