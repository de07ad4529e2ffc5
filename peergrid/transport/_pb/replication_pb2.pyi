from peergrid.transport._pb import common_pb2 as _common_pb2
from peergrid.transport._pb import map_pb2 as _map_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionsRequest(_message.Message):
    __slots__ = ("cluster", "members", "partitions")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    members: _common_pb2.MemberList
    partitions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster: _Optional[str] = ..., members: _Optional[_Union[_common_pb2.MemberList, _Mapping]] = ..., partitions: _Optional[_Iterable[int]] = ...) -> None: ...

class PartitionVersion(_message.Message):
    __slots__ = ("partition", "present", "version", "replicated")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICATED_FIELD_NUMBER: _ClassVar[int]
    partition: int
    present: bool
    version: int
    replicated: bool
    def __init__(self, partition: _Optional[int] = ..., present: bool = ..., version: _Optional[int] = ..., replicated: bool = ...) -> None: ...

class VersionsResponse(_message.Message):
    __slots__ = ("list_version", "versions")
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    list_version: int
    versions: _containers.RepeatedCompositeFieldContainer[PartitionVersion]
    def __init__(self, list_version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[PartitionVersion, _Mapping]]] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("cluster", "members", "partition")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    members: _common_pb2.MemberList
    partition: int
    def __init__(self, cluster: _Optional[str] = ..., members: _Optional[_Union[_common_pb2.MemberList, _Mapping]] = ..., partition: _Optional[int] = ...) -> None: ...

class PartitionChunk(_message.Message):
    __slots__ = ("cluster", "partition", "version", "entries", "last", "list_version", "sender", "restore")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    partition: int
    version: int
    entries: _containers.RepeatedCompositeFieldContainer[_map_pb2.Effect]
    last: bool
    list_version: int
    sender: str
    restore: bool
    def __init__(self, cluster: _Optional[str] = ..., partition: _Optional[int] = ..., version: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[_map_pb2.Effect, _Mapping]]] = ..., last: bool = ..., list_version: _Optional[int] = ..., sender: _Optional[str] = ..., restore: bool = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("cluster", "list_version", "partitions")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    list_version: int
    partitions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster: _Optional[str] = ..., list_version: _Optional[int] = ..., partitions: _Optional[_Iterable[int]] = ...) -> None: ...
