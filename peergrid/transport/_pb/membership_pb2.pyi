from peergrid.transport._pb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("cluster", "member", "partition_count", "serializer", "probe", "placement", "liveness", "min_cluster_size")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLUSTER_SIZE_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    member: _common_pb2.MemberInfo
    partition_count: int
    serializer: str
    probe: bool
    placement: Placement
    liveness: Liveness
    min_cluster_size: int
    def __init__(self, cluster: _Optional[str] = ..., member: _Optional[_Union[_common_pb2.MemberInfo, _Mapping]] = ..., partition_count: _Optional[int] = ..., serializer: _Optional[str] = ..., probe: bool = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., liveness: _Optional[_Union[Liveness, _Mapping]] = ..., min_cluster_size: _Optional[int] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("backup_count", "async_backup_count", "vnodes")
    BACKUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    ASYNC_BACKUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    VNODES_FIELD_NUMBER: _ClassVar[int]
    backup_count: int
    async_backup_count: int
    vnodes: int
    def __init__(self, backup_count: _Optional[int] = ..., async_backup_count: _Optional[int] = ..., vnodes: _Optional[int] = ...) -> None: ...

class Liveness(_message.Message):
    __slots__ = ("heartbeat_interval", "failure_timeout", "owner_lease")
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    OWNER_LEASE_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval: float
    failure_timeout: float
    owner_lease: float
    def __init__(self, heartbeat_interval: _Optional[float] = ..., failure_timeout: _Optional[float] = ..., owner_lease: _Optional[float] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("status", "reason", "master_address", "members", "cluster", "uuid", "list_version")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACCEPTED: _ClassVar[JoinResponse.Status]
        NOT_MASTER: _ClassVar[JoinResponse.Status]
        REFUSED: _ClassVar[JoinResponse.Status]
        NOT_READY: _ClassVar[JoinResponse.Status]
        UNREACHABLE: _ClassVar[JoinResponse.Status]
    ACCEPTED: JoinResponse.Status
    NOT_MASTER: JoinResponse.Status
    REFUSED: JoinResponse.Status
    NOT_READY: JoinResponse.Status
    UNREACHABLE: JoinResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    status: JoinResponse.Status
    reason: str
    master_address: str
    members: _common_pb2.MemberList
    cluster: str
    uuid: str
    list_version: int
    def __init__(self, status: _Optional[_Union[JoinResponse.Status, str]] = ..., reason: _Optional[str] = ..., master_address: _Optional[str] = ..., members: _Optional[_Union[_common_pb2.MemberList, _Mapping]] = ..., cluster: _Optional[str] = ..., uuid: _Optional[str] = ..., list_version: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("cluster", "uuid", "list_version", "seq", "relayed", "master", "list_master")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RELAYED_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    LIST_MASTER_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    uuid: str
    list_version: int
    seq: int
    relayed: _containers.RepeatedCompositeFieldContainer[RelayedBeat]
    master: str
    list_master: str
    def __init__(self, cluster: _Optional[str] = ..., uuid: _Optional[str] = ..., list_version: _Optional[int] = ..., seq: _Optional[int] = ..., relayed: _Optional[_Iterable[_Union[RelayedBeat, _Mapping]]] = ..., master: _Optional[str] = ..., list_master: _Optional[str] = ...) -> None: ...

class RelayedBeat(_message.Message):
    __slots__ = ("uuid", "list_version")
    UUID_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    list_version: int
    def __init__(self, uuid: _Optional[str] = ..., list_version: _Optional[int] = ...) -> None: ...

class RelayedAnswer(_message.Message):
    __slots__ = ("answered", "status", "list_version", "uncounted", "uuid", "unanswered")
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCOUNTED_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    UNANSWERED_FIELD_NUMBER: _ClassVar[int]
    answered: bool
    status: HeartbeatResponse.Status
    list_version: int
    uncounted: bool
    uuid: str
    unanswered: bool
    def __init__(self, answered: bool = ..., status: _Optional[_Union[HeartbeatResponse.Status, str]] = ..., list_version: _Optional[int] = ..., uncounted: bool = ..., uuid: _Optional[str] = ..., unanswered: bool = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("status", "list_version", "cluster", "uuid", "leaving", "seq", "master_heard_ms", "uncounted", "relayed", "relay_in_ms")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[HeartbeatResponse.Status]
        UNKNOWN_MEMBER: _ClassVar[HeartbeatResponse.Status]
        WRONG_CLUSTER: _ClassVar[HeartbeatResponse.Status]
    OK: HeartbeatResponse.Status
    UNKNOWN_MEMBER: HeartbeatResponse.Status
    WRONG_CLUSTER: HeartbeatResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MASTER_HEARD_MS_FIELD_NUMBER: _ClassVar[int]
    UNCOUNTED_FIELD_NUMBER: _ClassVar[int]
    RELAYED_FIELD_NUMBER: _ClassVar[int]
    RELAY_IN_MS_FIELD_NUMBER: _ClassVar[int]
    status: HeartbeatResponse.Status
    list_version: int
    cluster: str
    uuid: str
    leaving: bool
    seq: int
    master_heard_ms: int
    uncounted: bool
    relayed: _containers.RepeatedCompositeFieldContainer[RelayedAnswer]
    relay_in_ms: int
    def __init__(self, status: _Optional[_Union[HeartbeatResponse.Status, str]] = ..., list_version: _Optional[int] = ..., cluster: _Optional[str] = ..., uuid: _Optional[str] = ..., leaving: bool = ..., seq: _Optional[int] = ..., master_heard_ms: _Optional[int] = ..., uncounted: bool = ..., relayed: _Optional[_Iterable[_Union[RelayedAnswer, _Mapping]]] = ..., relay_in_ms: _Optional[int] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("cluster", "members")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    members: _common_pb2.MemberList
    def __init__(self, cluster: _Optional[str] = ..., members: _Optional[_Union[_common_pb2.MemberList, _Mapping]] = ...) -> None: ...

class GetMembersRequest(_message.Message):
    __slots__ = ("cluster",)
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    def __init__(self, cluster: _Optional[str] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("cluster", "uuid", "final")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    uuid: str
    final: bool
    def __init__(self, cluster: _Optional[str] = ..., uuid: _Optional[str] = ..., final: bool = ...) -> None: ...

class SafeStateRequest(_message.Message):
    __slots__ = ("cluster", "merging")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MERGING_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    merging: bool
    def __init__(self, cluster: _Optional[str] = ..., merging: bool = ...) -> None: ...

class SafeStateResponse(_message.Message):
    __slots__ = ("safe", "list_version", "detail")
    SAFE_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    safe: bool
    list_version: int
    detail: str
    def __init__(self, safe: bool = ..., list_version: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class MergeRequest(_message.Message):
    __slots__ = ("cluster", "into")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    INTO_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    into: _common_pb2.MemberList
    def __init__(self, cluster: _Optional[str] = ..., into: _Optional[_Union[_common_pb2.MemberList, _Mapping]] = ...) -> None: ...
