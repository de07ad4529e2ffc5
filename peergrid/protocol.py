"""The operations members ask of each other, as domain objects.

No grpc and no protobuf here: the transport converts its messages into these
at the border, and every other layer sees only these. Codes and statuses are
plain ints (they travel as ``uint32``); the classes below name them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import msgpack

log = logging.getLogger("peergrid")


class Code:
    """Operation codes."""

    GET = 1
    CONTAINS = 2
    PUT = 3
    SET = 4
    PUT_IF_ABSENT = 5
    REPLACE = 6
    REPLACE_IF_SAME = 7
    DELETE = 8
    SIZE = 9
    CLEAR = 10
    ENTRIES = 11
    KEYS = 12
    RECOVER = 13  # serve a lost partition again, empty
    MERGE = 14  # a merging member's entries of one partition (``effects``), by the map's merge policy
    # Entries (issue 15): TTL, removal, eviction, views of one entry. 15-19 and 22-29.
    EXPIRE = 15  # give ``key``'s live entry a TTL of ``ttl`` seconds (> 0)
    PERSIST = 16  # remove ``key``'s TTL; ``found`` if it had one
    TTL = 17  # ``key``'s TTL left (Result.ttl; 0: none), ``found`` if it is live
    ENTRY_VIEW = 18  # ``key``'s entry as an ``EntryRecord`` in the result's value
    REMOVE = 19  # delete ``key``, answering its previous value
    REMOVE_IF_SAME = 22  # delete ``key`` if its live value equals ``expect``
    EVICT = 23  # drop ``key`` from memory only (never from the map's store)
    EVICT_ALL = 24  # drop every entry of the map in the partition from memory only
    CONTAINS_VALUE = 25  # ``found`` if some live entry of the partition has a value equal to ``value``
    DESTROY = 26  # drop the map's entries in the partition, from memory only, telling no listener
    FLUSH = 30  # store a write-behind map's queued writes in this partition now
    GET_MANY = 31  # a get_all's keys of one map on one member, as buffers (peergrid/multiget.py)
    # new owner -> the member it copies a partition from: GET ``key`` from that copy, which must
    # be at ``version``, while the copy is on its way (replication/manager.py, "Reads during a hand-off")
    HANDOFF_GET = 32
    BACKUP = 20  # owner -> backup: apply ``effects`` to reach ``version``
    TOUCH = 21  # owner -> backup, unversioned: entries' last access times (idle expiry), journal records
    # Compute (peergrid/owner/compute.py): 40-49.
    EXECUTE = 40  # run the entry processor named by ``expect`` on ``key``, args in ``value``
    LOCK = 41  # acquire ``key``'s lock for the holder in ``value``, lease ``ttl``
    UNLOCK = 42  # release it once (reentrant holds count)
    LOCK_STATE = 43  # whether ``key``'s lock is held, and its token


WRITES = frozenset(
    {
        Code.PUT,
        Code.SET,
        Code.PUT_IF_ABSENT,
        Code.REPLACE,
        Code.REPLACE_IF_SAME,
        Code.DELETE,
        Code.CLEAR,
        Code.EXPIRE,
        Code.PERSIST,
        Code.REMOVE,
        Code.REMOVE_IF_SAME,
        Code.EVICT,
        Code.EVICT_ALL,
        Code.DESTROY,
    }
)
KEYED = frozenset(
    {
        Code.GET,
        Code.CONTAINS,
        Code.PUT,
        Code.SET,
        Code.PUT_IF_ABSENT,
        Code.REPLACE,
        Code.REPLACE_IF_SAME,
        Code.DELETE,
        Code.EXPIRE,
        Code.PERSIST,
        Code.TTL,
        Code.ENTRY_VIEW,
        Code.REMOVE,
        Code.REMOVE_IF_SAME,
        Code.EVICT,
    }
)
MEMORY_ONLY = frozenset({Code.EXPIRE, Code.PERSIST, Code.EVICT, Code.EVICT_ALL, Code.DESTROY})
"""Writes of memory only: the map's store (write-through or behind) is never written for them
(an expire or persist of a key not in memory loads it first; evictions and destroy do not)."""
COMPUTE = frozenset({Code.EXECUTE, Code.LOCK, Code.UNLOCK, Code.LOCK_STATE})
COMPUTE_WRITES = frozenset({Code.EXECUTE, Code.LOCK, Code.UNLOCK})
WRITES |= COMPUTE_WRITES  # for callers: an outcome unknown after sending is indeterminate
KEYED |= COMPUTE | {Code.HANDOFF_GET}
KNOWN = KEYED | {
    Code.SIZE,
    Code.CLEAR,
    Code.ENTRIES,
    Code.KEYS,
    Code.BACKUP,
    Code.RECOVER,
    Code.TOUCH,
    Code.FLUSH,
    Code.MERGE,
    Code.CONTAINS_VALUE,
    Code.EVICT_ALL,
    Code.DESTROY,
    Code.GET_MANY,
}


class Status:
    """Result statuses."""

    OK = 0
    MOVED = 1  # this member does not own the partition: refresh the table and retry
    RETRY = 2  # the partition is migrating here, or this member's table is behind: retry soon
    LOST = 3  # every copy of the partition was lost
    QUORUM = 4  # fewer members than min_cluster_size: writes refused
    INVALID = 5  # the request is malformed or over a limit; retrying will not help
    ERROR = 6  # the operation failed on the serving member
    GAP = 7  # backup: the op's version does not follow this copy's; send the partition
    UNREACHABLE = 8  # local only: the peer could not be reached; ``found`` says if the op was sent
    TIMEOUT = 9  # local only: the deadline passed before the op could be served
    INDETERMINATE = 10  # local only: a write was sent but its outcome is unknown
    CLOSED = 11  # local only: this member was shut down
    CAPACITY = 12  # the map is full and evicts nothing (eviction="none")
    STORE = 13  # the map's store (its database) failed
    TOO_LARGE = 14  # this result alone does not fit one message; ``count`` is its size in bytes
    PROCESSOR = 20  # an entry processor is unknown on the owner, or raised; ``message`` says which


class Effect(NamedTuple):
    """One change to one partition's data, as an owner ships it to its backups."""

    kind: int  # EffectKind
    map: str
    key: bytes = b""
    value: bytes = b""
    expire_at: float = 0.0  # wall-clock seconds; 0 = never
    stamp: int = 0  # a change made while the cluster may be split: its merge stamp (journal.py)


class Copy(NamedTuple):
    """A member's complete copy of a partition, as it reports it."""

    version: int
    replicated: bool = False  # the reporting member owns it, serves it, and every backup is in sync


class EffectKind:
    """What an ``Effect`` does."""

    PUT = 1
    DELETE = 2
    CLEAR = 3
    TOUCH = 4  # an owner's read, for backups' idle clocks; expire_at carries the access time
    ACCESS = 5  # in a partition copy, after its PUT: the entry's last access (expire_at), kept as is
    JOURNAL = 6  # in a partition copy: a journaled change of ``key`` (``stamp``; value b"d": a delete)
    DELTA = 7  # an increment of ``key`` by the signed int in ``value``, journaled at ``stamp``
    # An owner's expiry sweep: every entry of ``map`` whose TTL deadline is at or before
    # ``expire_at`` (the owner's clock) is gone. One per map and sweep slice, not a DELETE per entry.
    EXPIRED = 8


class Op:
    """One operation on one partition."""

    __slots__ = ("code", "effects", "expect", "key", "map", "partition", "ttl", "value", "version")

    def __init__(
        self,
        code: int,
        partition: int,
        map: str,  # noqa: A002 - the protocol's field name
        key: bytes = b"",
        value: bytes = b"",
        expect: bytes = b"",
        ttl: float = 0.0,
        version: int = 0,
        effects: tuple[Effect, ...] = (),
    ) -> None:
        self.code = code
        self.partition = partition
        self.map = map
        self.key = key
        self.value = value
        self.expect = expect
        self.ttl = ttl
        self.version = version
        self.effects = effects

    def __repr__(self) -> str:
        return f"Op(code={self.code}, partition={self.partition}, map={self.map!r}, key={self.key!r})"


class Result:
    """The answer to one ``Op``."""

    __slots__ = ("count", "found", "keys", "message", "status", "ttl", "value", "values", "version")

    def __init__(
        self,
        status: int = Status.OK,
        value: bytes = b"",
        found: bool = False,
        count: int = 0,
        keys: list[bytes] | None = None,
        values: list[bytes] | None = None,
        message: str = "",
        version: int = 0,
    ) -> None:
        self.status = status
        self.value = value
        self.found = found
        self.count = count
        self.keys = keys
        self.values = values
        self.message = message
        self.version = version  # the partition's version after a write, or at a read (0: unknown)
        self.ttl = 0.0  # seconds the value read or written has left before it expires (0: never)

    def __repr__(self) -> str:
        return (
            f"Result(status={self.status}, found={self.found}, count={self.count}, message={self.message!r})"
        )


OK_EMPTY = Result()


class Answered(Result):
    """A write's result that its sender already took from the write's copy (``with_reply``):
    the owner leaves it out of the frame's answer, which it does not send when that leaves
    nothing."""

    __slots__ = ()

    @classmethod
    def of(cls, result: Result) -> Answered:
        """``result``, marked answered."""
        answered = cls(result.status, result.value, result.found, result.count, result.keys, result.values)
        answered.message, answered.version, answered.ttl = result.message, result.version, result.ttl
        return answered


# A BACKUP op sent to the member whose caller sent the write carries the write's result:
# ``key`` packs (the caller's frame id, the op's index in it, status, found, version, ttl),
# ``value`` is the result's value, ``ttl`` the seconds the owner's lease had left when it sent
# the copy. The backup, once it applied the copy, hands the result to the waiting call itself
# (``Pipe.forwarded``): the write then costs one round trip to the owner and back (the copy
# and its ack) rather than two, and the owner's answer is not sent.
_REPLY = struct.Struct("<QIBBQd")


def with_reply(op: Op, frame_id: int, index: int, result: Result, lease_left: float) -> Op:
    """The BACKUP ``op`` carrying ``result``, the answer to op ``index`` of frame ``frame_id``
    of the member it goes to, with ``lease_left`` (seconds) of the owner's lease."""
    key = _REPLY.pack(frame_id, index, result.status, result.found, result.version, result.ttl)
    return Op(
        Code.BACKUP,
        op.partition,
        "",
        key,
        result.value,
        ttl=lease_left,
        version=op.version,
        effects=op.effects,
    )


def reply_of(op: Op) -> tuple[int, int, Result, float] | None:
    """What ``with_reply`` put in a BACKUP op: ``(frame id, index, result, lease left)``, or
    None when it carries no result. Raises ``ValueError`` when the packing is malformed."""
    if not op.key:
        return None
    if len(op.key) != _REPLY.size:
        raise ValueError(f"a backup's reply is {_REPLY.size} bytes, not {len(op.key)}")
    if not 0 < op.ttl < math.inf:  # NaN too: the caller's lease check would pass it
        raise ValueError(f"a backup's reply needs the owner's lease left > 0 seconds, got {op.ttl}")
    frame_id, index, status, found, version, ttl = _REPLY.unpack(op.key)
    result = Result(status, op.value, bool(found), version=version)
    result.ttl = ttl
    return frame_id, index, result, op.ttl


def settled(future: asyncio.Future[Result], failed: int = Status.ERROR) -> Result:
    """The result of an operation's future that has ended. Cancelled or failed (a bug: logged
    with its traceback), it is answered with status ``failed``, not raised: raised in a done
    callback, it would leave whatever waits on that callback waiting for ever."""
    if future.cancelled():
        return Result(failed, message="cancelled on the serving member")
    exc = future.exception()
    if exc is not None:
        log.error("an operation failed on this member", exc_info=exc)
        return Result(failed, message="internal error on the serving member")
    return future.result()


# ---------------------------------------------------------------- membership


@dataclass(frozen=True)
class Member:
    """One member of the cluster."""

    uuid: str
    """Random per start: a restarted process is a new member."""
    address: str
    """``host:port`` of the member's gRPC endpoint."""
    weight: float = 1.0
    """Relative share of partitions."""
    leaving: bool = False
    """Gracefully leaving: owns no partitions, still answers until it is removed."""


@dataclass(frozen=True)
class MemberList:
    """A version of the member list, oldest member first."""

    version: int
    master_uuid: str
    members: tuple[Member, ...]
    origin: str = ""
    """Random per formation of a cluster instance and kept by every later version: two lists of
    one origin descend from one formation (the two sides of a split), else they formed apart."""
    lost_at: float = 0.0
    """Wall-clock seconds (``time.time()``) when this lineage last lost a member that did not
    leave, kept by every later version (0: never). Every member journals its writes for a merge
    until ``merge_horizon`` after it, those that join later too (``storage/journal.py``)."""
    served_at: float = field(default=0.0, compare=False)
    """Only in an answer to ``get_members`` (0 elsewhere): wall-clock seconds when the member
    that answered last served, holding its lease with the quorum ``min_cluster_size`` asks
    (``cluster/merge.py``: of two lineages that both lost their quorum, the one that served
    last survives)."""
    quorum_lost: bool = field(default=False, compare=False)
    """Only in an answer to ``get_members``: the member that answered is a master whose lineage
    lost its quorum for good (``Membership.lost_quorum``)."""

    def find(self, uuid: str) -> Member | None:
        """The member with this uuid, or None."""
        return self._by_uuid.get(uuid)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._by_uuid

    @functools.cached_property
    def _by_uuid(self) -> dict[object, Member]:
        # (Built once per list: the master looks up every member's heartbeat in it, N a second.
        # The first of a uuid named twice, as the scan did; such a list is refused anyway.)
        index: dict[object, Member] = {}
        for member in self.members:
            index.setdefault(member.uuid, member)
        return index

    @functools.cached_property
    def uuids(self) -> tuple[str, ...]:
        """Member uuids, oldest first."""
        return tuple(member.uuid for member in self.members)

    def placement(self) -> tuple[tuple[str, float, bool], ...]:
        """``(uuid, weight, leaving)`` of every member, what the partition table derives from."""
        return tuple((m.uuid, m.weight, m.leaving) for m in self.members)

    def successor(self, version: int | None = None, **changes: object) -> MemberList:
        """A copy with a new version (default: this one's + 1) and other fields changed (the
        answering member's ``served_at`` and ``quorum_lost`` cleared)."""
        version = self.version + 1 if version is None else version
        return replace(self, version=version, **{"served_at": 0.0, "quorum_lost": False, **changes})  # type: ignore[arg-type]

    def as_list(self) -> MemberList:
        """This list without the answering member's ``served_at`` and ``quorum_lost``."""
        if not self.served_at and not self.quorum_lost:
            return self
        return replace(self, served_at=0.0, quorum_lost=False)

    def with_member(self, member: Member) -> MemberList:
        """The next version with ``member`` appended (or updated in place)."""
        if member.uuid in self:
            return self.successor(members=tuple(member if m.uuid == member.uuid else m for m in self.members))
        return self.successor(members=(*self.members, member))

    def without(
        self,
        uuids: set[str] | frozenset[str],
        master_uuid: str | None = None,
        version: int | None = None,
        lost_at: float | None = None,
    ) -> MemberList:
        """The next version (or ``version``) without the given members; ``lost_at``: they
        went without leaving, at that wall-clock time."""
        return self.successor(
            version,
            members=tuple(m for m in self.members if m.uuid not in uuids),
            master_uuid=master_uuid or self.master_uuid,
            lost_at=self.lost_at if lost_at is None else lost_at,
        )


#: Most members a member list may carry; a longer list from a peer is refused.
MAX_MEMBERS = 10_000
MAX_WEIGHT = 100.0
_UUID = re.compile(r"[0-9A-Za-z_-]{1,63}")
#: Longest map name (characters) a request may carry, as the map façades allow.
REFILLS = frozenset({Code.SET, Code.PUT})
"""Writes that always store ``op.value`` when acknowledged: a near cache may hold it after the ack."""
MAX_NAME = 255
_PORT = re.compile(r"[0-9]{1,5}")


def uuid_problem(uuid: str, what: str = "member uuid") -> str | None:
    """Why ``uuid`` (as a peer sent it) cannot name a member, or None."""
    if not isinstance(uuid, str) or not _UUID.fullmatch(uuid):
        return f"{what} {str(uuid)[:80]!r} is not 1-63 letters, digits, '-' or '_'"
    return None


def map_name_problem(name: str, *, allow_empty: bool = False) -> str | None:
    """Why ``name`` (as a peer sent it) cannot name a map, or None (``allow_empty``: for
    requests that may name no map)."""
    if len(name) > MAX_NAME or not (name or allow_empty):
        return f"map names have 1 to {MAX_NAME} characters, got one of {len(name)}"
    return None


def member_problem(member: Member) -> str | None:
    """Why ``member`` (as a peer sent it) cannot be a member, or None.

    The uuid becomes a DNS label for mDNS and a ring label: 1-63 letters,
    digits, ``-`` or ``_``. The address must be ``host:port``; the weight a
    finite number in (0, 100], as ``GridConfig.weight``.
    """
    problem = uuid_problem(member.uuid)
    if problem is not None:
        return problem
    host, _, port = member.address.rpartition(":")
    if (
        len(member.address) > 300
        or not host.strip("[]")
        or not _PORT.fullmatch(port)
        or not 0 < int(port) < 65536
    ):
        return f"member address {member.address[:310]!r} is not host:port"
    if not math.isfinite(member.weight) or not 0 < member.weight <= MAX_WEIGHT:
        return f"member weight {member.weight!r} is not a number in (0, {MAX_WEIGHT:g}]"
    return None


def member_list_problem(members: MemberList) -> str | None:
    """Why a member list (as a peer sent it) is malformed, or None.

    An empty list is version 0 (a member that has not joined yet); any other
    has distinct, well-formed members and names one of them master.
    """
    if len(members.members) > MAX_MEMBERS:
        return f"member list of {len(members.members)} members exceeds {MAX_MEMBERS}"
    for member in members.members:
        problem = member_problem(member)
        if problem is not None:
            return problem
    if len(set(members.uuids)) != len(members.members):
        return "member list names a uuid twice"
    if not members.members:
        return None if members.version == 0 else "a member list of version > 0 has no members"
    if members.master_uuid not in members:
        return f"member list master {members.master_uuid!r} is not in the list"
    return None


class JoinStatus:
    """Answers to a join request."""

    ACCEPTED = 0
    NOT_MASTER = 1  # ask ``master_address`` instead
    REFUSED = 2  # ``reason`` says why; do not retry
    NOT_READY = 3  # the seed is itself still joining; try again
    UNREACHABLE = 4  # the master could not call the joiner back at its address; retry


@dataclass(frozen=True)
class Terms:
    """What the members of one cluster must share, sent with a join and checked by the member asked.

    Each member derives the partition table from the member list by itself, with
    ``partition_count`` and the placement (``backup_count``, ``async_backup_count``,
    ``vnodes``): members that differ in any of them disagree on who owns and who backs up a
    partition, so writes wait for copies that are refused, or bounce between two owners, until
    their deadline. They read each other's bytes with ``serializer``. And an owner stops serving
    when its lease (``owner_lease``) runs out, which must come before any member, as master,
    declares it dead (``failure_timeout`` after its last ``heartbeat_interval``): checked for
    each member's own timings when it starts, and across members only if all use the same.
    And ``min_cluster_size``: a member that counts quorums with another would serve, or drop
    silent members, where the others count none (``cluster/membership.py``).
    A placement, liveness or quorum of None comes from a member older than its check: not
    compared.
    """

    partition_count: int
    serializer: str
    backup_count: int | None = None
    async_backup_count: int | None = None
    vnodes: int | None = None
    heartbeat_interval: float | None = None
    failure_timeout: float | None = None
    owner_lease: float | None = None
    min_cluster_size: int | None = None

    def refusal(self, cluster: str, joiner: Terms) -> str:
        """Why a member with ``joiner``'s terms may not join ours (``cluster``); "" if it may."""
        names = ["partition_count", "serializer"]
        if joiner.backup_count is not None:
            names += ["backup_count", "async_backup_count", "vnodes"]
        if joiner.failure_timeout is not None:
            names += ["timing.heartbeat_interval", "timing.failure_timeout", "timing.owner_lease"]
        if joiner.min_cluster_size is not None:
            names.append("min_cluster_size")
        return "; ".join(
            f"{name} differs: cluster {cluster!r} uses {_term(self, name)!r}, "
            f"the joining member {_term(joiner, name)!r}"
            for name in names
            if _term(self, name) != _term(joiner, name)
        )


def _term(terms: Terms, name: str) -> object:
    return getattr(terms, name.removeprefix("timing."))


@dataclass(frozen=True)
class JoinReply:
    """A seed's answer to a join request."""

    status: int
    reason: str = ""
    master_address: str = ""
    members: MemberList | None = None
    cluster: str = ""
    uuid: str = ""
    list_version: int = 0
    """The answering member's list version: while it grows, the cluster is admitting members."""


class HeartbeatStatus:
    """Answers to a heartbeat."""

    OK = 0
    UNKNOWN_MEMBER = 1  # the sender is not in the receiver's list: it should rejoin
    WRONG_CLUSTER = 2
    UNANSWERED = 3  # a relay's, never a member's own: it carried the beat up, no answer came in time


@dataclass(frozen=True)
class HeartbeatReply:
    """A peer's answer to a heartbeat."""

    status: int
    list_version: int
    uuid: str = ""
    """The answering member's uuid."""
    leaving: bool = False
    """The answering member is leaving: it asked the master to hand its partitions over."""
    master_heard: float | None = None
    """Seconds since the answering member's master last answered it (0.0: it is the master);
    None when it has no answer from its master (or is of an earlier version)."""
    counted: bool = True
    """False: the answer must not renew the asker's owner lease (``Membership.vouch_lapse``)."""
    relayed: tuple[HeartbeatReply | None, ...] = ()
    """The master's answers to the beats the request asked the receiver to relay, in order
    (``uuid``: the master's); ``UNANSWERED`` for one carried up that no answer came back for in
    time; None for one not carried to the master."""
    relay_in: float | None = None
    """Seconds until the answering member next sends its beats (and those it relays) up."""


#: A relay's answer for a beat it carried up and got no answer for in time (``HeartbeatReply.relayed``).
UNANSWERED = HeartbeatReply(HeartbeatStatus.UNANSWERED, 0)


@dataclass(frozen=True)
class RelayedBeat:
    """A member's heartbeat for the master, carried by a relay (large clusters: see
    ``cluster.relay``)."""

    uuid: str
    list_version: int


@dataclass(frozen=True)
class Chunk:
    """A piece of a partition in transfer (migration, backup rebuild)."""

    partition: int
    version: int
    entries: tuple[Effect, ...]
    last: bool
    list_version: int = 0
    sender: str = ""
    restore: bool = False  # a merging member's copy, for an owner that lost the partition


class EntryRecord(NamedTuple):
    """What an owner tracks of one entry, in an ENTRY_VIEW result's value."""

    value: bytes
    expire_at: float  # wall-clock seconds; 0 = never
    last_access: float  # wall-clock seconds; 0 = not tracked for this map

    def encode(self) -> bytes:
        """The result value."""
        return msgpack.packb(list(self), use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> EntryRecord:
        """Parse a result value from a peer; ``ValueError`` when malformed."""
        value, expire_at, last_access = unpack_fields(data, 3)
        if (
            not isinstance(value, bytes)
            or not isinstance(expire_at, int | float)
            or not isinstance(last_access, int | float)
        ):
            raise ValueError("an entry record is [value, expire_at, last_access]")  # noqa: TRY004 - wire data
        return cls(value, float(expire_at), float(last_access))


class LockRequest(NamedTuple):
    """Who asks, in a LOCK or UNLOCK op's value."""

    member: str  # the holder's member uuid
    holder: int  # the thread's or task's serial on that member
    nonce: int  # one per lock()/unlock() call: its retries are recognised
    token: int = 0  # UNLOCK: the fencing token of the grant it releases (0: whichever is held)

    def encode(self) -> bytes:
        """The op value."""
        return msgpack.packb(list(self), use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> LockRequest:
        """Parse an op value from a peer; ``ValueError`` when malformed.

        Three fields (no token) come from members before the token was added: a rolling
        upgrade keeps working, those unlocks unfenced as before.
        """
        try:
            member, holder, nonce, token = unpack_fields(data, 4)
        except ValueError:
            member, holder, nonce = unpack_fields(data, 3)
            token = 0
        if not isinstance(member, str) or not all(isinstance(n, int) for n in (holder, nonce, token)):
            raise ValueError("a lock request is [member uuid, holder id, nonce, token]")
        return cls(member, holder, nonce, token)


def unpack_fields(data: bytes, size: int) -> list[Any]:
    """A msgpack list of ``size`` fields from a peer; ``ValueError`` when malformed."""
    try:
        fields = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"not msgpack: {exc}") from exc
    if not isinstance(fields, list) or len(fields) != size:
        raise ValueError(f"expected a list of {size} fields")
    return fields
