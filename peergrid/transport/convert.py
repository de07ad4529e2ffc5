"""Protobuf messages <-> domain objects, at the transport border only.

Messages from peers are untrusted: a member or member list that could not be
one (a NaN weight, a duplicate uuid, a master not in the list), or a map name
longer than any map's, raises ``ValueError`` here, before any domain code
sees it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from peergrid.events.model import EventBatch
from peergrid.protocol import (
    Chunk,
    Effect,
    JoinReply,
    Member,
    MemberList,
    Terms,
    map_name_problem,
    member_list_problem,
    member_problem,
    uuid_problem,
)
from peergrid.transport._pb import common_pb2, events_pb2, map_pb2, membership_pb2, replication_pb2


def member_to_pb(member: Member) -> common_pb2.MemberInfo:
    return common_pb2.MemberInfo(
        uuid=member.uuid, address=member.address, weight=member.weight, leaving=member.leaving
    )


def member_from_pb(msg: common_pb2.MemberInfo) -> Member:
    """A member as a peer described it; ``ValueError`` when it could not be one."""
    member = _member(msg)
    problem = member_problem(member)
    if problem is not None:
        raise ValueError(problem)
    return member


def _member(msg: common_pb2.MemberInfo) -> Member:
    return Member(uuid=msg.uuid, address=msg.address, weight=msg.weight or 1.0, leaving=msg.leaving)


def members_to_pb(members: MemberList, cluster: str) -> common_pb2.MemberList:
    """The list as a message; the same message for the same list object (read it, never
    change it): a master publishes one list to every member, a new owner sends one with each
    version query, so a 100-member list would otherwise be built a hundred times."""
    key = (id(members), cluster)
    cached = _BUILT.get(key)
    if cached is not None and cached[0] is members:
        return cached[1]
    msg = common_pb2.MemberList(
        version=members.version,
        master_uuid=members.master_uuid,
        members=[member_to_pb(m) for m in members.members],
        cluster=cluster,
        origin=members.origin,
        lost_at_ms=round(members.lost_at * 1000),
        served_at_ms=round(members.served_at * 1000),
        quorum_lost=members.quorum_lost,
    )
    if members.served_at or members.quorum_lost:
        return msg  # (an answer to get_members, built for one caller: not kept)
    _remember(_BUILT, key, (members, msg))
    return msg


def members_from_pb(msg: common_pb2.MemberList) -> MemberList:
    """A member list as a peer sent it; ``ValueError`` when it is malformed. A list received
    before, byte for byte, is not decoded and checked again (each member receives the same
    list from every new owner's version query)."""
    wire = msg.SerializeToString(deterministic=True)
    members = _DECODED.get(wire)
    if members is not None:
        return members
    members = MemberList(
        version=msg.version,
        master_uuid=msg.master_uuid,
        members=tuple(_member(m) for m in msg.members),
        origin=msg.origin,
        lost_at=msg.lost_at_ms / 1000,
        served_at=msg.served_at_ms / 1000,
        quorum_lost=msg.quorum_lost,
    )
    problem = member_list_problem(members)
    if problem is not None:
        raise ValueError(problem)
    _remember(_DECODED, wire, members)
    return members


# The last few lists built and decoded (several members may share a process). A dict's
# get and set are atomic: members' loop threads may share these without a lock.
_KEPT = 8
_BUILT: dict[tuple[int, str], tuple[MemberList, common_pb2.MemberList]] = {}
_DECODED: dict[bytes, MemberList] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    while len(cache) > _KEPT:
        try:
            del cache[next(iter(cache))]
        except (KeyError, RuntimeError, StopIteration):  # another thread trimmed it first
            break


def join_request_to_pb(cluster: str, member: Member, terms: Terms, probe: bool) -> membership_pb2.JoinRequest:
    msg = membership_pb2.JoinRequest(
        cluster=cluster,
        member=member_to_pb(member),
        partition_count=terms.partition_count,
        serializer=terms.serializer,
        probe=probe,
    )
    if terms.backup_count is not None:
        msg.placement.backup_count = terms.backup_count
        msg.placement.async_backup_count = terms.async_backup_count or 0
        msg.placement.vnodes = terms.vnodes or 0
    if terms.failure_timeout is not None:
        msg.liveness.heartbeat_interval = terms.heartbeat_interval or 0.0
        msg.liveness.failure_timeout = terms.failure_timeout
        msg.liveness.owner_lease = terms.owner_lease or 0.0
    if terms.min_cluster_size is not None:
        msg.min_cluster_size = terms.min_cluster_size
    return msg


def terms_from_pb(msg: membership_pb2.JoinRequest) -> Terms:
    """A joiner's terms; its placement or liveness None when it sent none (a member from before
    they were sent)."""
    terms = Terms(msg.partition_count, msg.serializer)
    if msg.HasField("placement"):
        placement = msg.placement
        terms = replace(
            terms,
            backup_count=placement.backup_count,
            async_backup_count=placement.async_backup_count,
            vnodes=placement.vnodes,
        )
    if msg.HasField("liveness"):
        liveness = msg.liveness
        terms = replace(
            terms,
            heartbeat_interval=liveness.heartbeat_interval,
            failure_timeout=liveness.failure_timeout,
            owner_lease=liveness.owner_lease,
        )
    if msg.HasField("min_cluster_size"):
        terms = replace(terms, min_cluster_size=msg.min_cluster_size)
    return terms


def join_reply_to_pb(reply: JoinReply) -> membership_pb2.JoinResponse:
    msg = membership_pb2.JoinResponse(
        status=reply.status,  # type: ignore[arg-type]
        reason=reply.reason,
        master_address=reply.master_address,
        cluster=reply.cluster,
        uuid=reply.uuid,
        list_version=reply.list_version,
    )
    if reply.members is not None:
        msg.members.CopyFrom(members_to_pb(reply.members, reply.cluster))
    return msg


def join_reply_from_pb(msg: membership_pb2.JoinResponse) -> JoinReply:
    return JoinReply(
        status=msg.status,
        reason=msg.reason,
        master_address=msg.master_address,
        members=members_from_pb(msg.members) if msg.HasField("members") else None,
        cluster=msg.cluster,
        uuid=msg.uuid,
        list_version=msg.list_version,
    )


def effect_to_pb(effect: Effect) -> map_pb2.Effect:
    return map_pb2.Effect(
        kind=effect.kind,
        map=effect.map,
        key=effect.key,
        value=effect.value,
        expire_at=effect.expire_at,
        stamp=effect.stamp,
    )


def effect_from_pb(msg: map_pb2.Effect) -> Effect:
    return Effect(msg.kind, msg.map, msg.key, msg.value, msg.expire_at, msg.stamp)


def chunk_to_pb(chunk: Chunk, cluster: str) -> replication_pb2.PartitionChunk:
    return replication_pb2.PartitionChunk(
        cluster=cluster,
        partition=chunk.partition,
        version=chunk.version,
        entries=[effect_to_pb(e) for e in chunk.entries],
        last=chunk.last,
        list_version=chunk.list_version,
        sender=chunk.sender,
        restore=chunk.restore,
    )


def chunk_from_pb(msg: replication_pb2.PartitionChunk) -> Chunk:
    """A chunk of a partition copy as a peer sent it; ``ValueError`` when it names a member or a
    map that could not be one."""
    problem = uuid_problem(msg.sender, "chunk sender") if msg.sender else None
    for effect in msg.entries:
        problem = problem or map_name_problem(effect.map, allow_empty=True)
    if problem is not None:
        raise ValueError(problem)
    return Chunk(
        partition=msg.partition,
        version=msg.version,
        entries=tuple(effect_from_pb(e) for e in msg.entries),
        last=msg.last,
        list_version=msg.list_version,
        sender=msg.sender,
        restore=msg.restore,
    )


def events_to_pb(batch: EventBatch) -> events_pb2.EventBatch:
    msg = events_pb2.EventBatch(
        kinds=batch.kinds,
        partitions=batch.partitions,
        seqs=batch.seqs,
        keys=batch.keys,
        heartbeat=batch.heartbeat,
        owned=batch.owned,
        owned_seqs=batch.owned_seqs,
        table_version=batch.table_version,
    )
    if batch.values is not None:
        msg.values.extend(batch.values)
    if batch.old_values is not None:
        msg.old_values.extend(batch.old_values)
    if batch.versions is not None:
        msg.versions.extend(batch.versions)
    if batch.ttls is not None and any(batch.ttls):
        msg.ttls.extend(batch.ttls)
    return msg


def events_from_pb(msg: events_pb2.EventBatch) -> EventBatch:
    count = len(msg.kinds)
    if not (len(msg.partitions) == len(msg.seqs) == len(msg.keys) == count):
        raise ValueError("event batch columns disagree in length")
    if len(msg.owned) != len(msg.owned_seqs):
        raise ValueError("event batch heartbeat columns disagree in length")
    values = list(msg.values) if len(msg.values) else None
    olds = list(msg.old_values) if len(msg.old_values) else None
    if (values is not None and len(values) != count) or (olds is not None and len(olds) != count):
        raise ValueError("event batch value columns disagree in length")
    versions = list(msg.versions) if len(msg.versions) else None
    if versions is not None and len(versions) != count:
        raise ValueError("event batch version column disagrees in length")
    ttls = list(msg.ttls) if len(msg.ttls) else None
    if ttls is not None and (len(ttls) != count or not all(t >= 0 for t in ttls)):
        raise ValueError("event batch ttl column disagrees in length or holds a negative time")
    return EventBatch(
        kinds=list(msg.kinds),
        partitions=list(msg.partitions),
        seqs=list(msg.seqs),
        keys=list(msg.keys),
        values=values,
        old_values=olds,
        heartbeat=msg.heartbeat,
        owned=list(msg.owned),
        owned_seqs=list(msg.owned_seqs),
        table_version=msg.table_version,
        versions=versions,
        ttls=ttls,
    )
