"""Protobuf messages <-> domain objects, at the transport border only."""

from __future__ import annotations

from collections.abc import Sequence

from peergrid.protocol import Chunk, Effect, JoinReply, Member, MemberList, Op, Result
from peergrid.transport._pb import common_pb2, map_pb2, membership_pb2, replication_pb2


def member_to_pb(member: Member) -> common_pb2.MemberInfo:
    return common_pb2.MemberInfo(
        uuid=member.uuid, address=member.address, weight=member.weight, leaving=member.leaving
    )


def member_from_pb(msg: common_pb2.MemberInfo) -> Member:
    return Member(uuid=msg.uuid, address=msg.address, weight=msg.weight or 1.0, leaving=msg.leaving)


def members_to_pb(members: MemberList, cluster: str) -> common_pb2.MemberList:
    return common_pb2.MemberList(
        version=members.version,
        master_uuid=members.master_uuid,
        members=[member_to_pb(m) for m in members.members],
        cluster=cluster,
    )


def members_from_pb(msg: common_pb2.MemberList) -> MemberList:
    return MemberList(
        version=msg.version,
        master_uuid=msg.master_uuid,
        members=tuple(member_from_pb(m) for m in msg.members),
    )


def join_reply_to_pb(reply: JoinReply) -> membership_pb2.JoinResponse:
    msg = membership_pb2.JoinResponse(
        status=reply.status,  # type: ignore[arg-type]
        reason=reply.reason,
        master_address=reply.master_address,
        cluster=reply.cluster,
        uuid=reply.uuid,
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
    )


def effect_to_pb(effect: Effect) -> map_pb2.Effect:
    return map_pb2.Effect(
        kind=effect.kind,
        map=effect.map,
        key=effect.key,
        value=effect.value,
        expire_at=effect.expire_at,
    )


def effect_from_pb(msg: map_pb2.Effect) -> Effect:
    return Effect(msg.kind, msg.map, msg.key, msg.value, msg.expire_at)


def op_to_pb(op: Op) -> map_pb2.Op:
    msg = map_pb2.Op(
        code=op.code,
        partition=op.partition,
        map=op.map,
        key=op.key,
        value=op.value,
        expect=op.expect,
        ttl=op.ttl,
        version=op.version,
    )
    if op.effects:
        msg.effects.extend(effect_to_pb(e) for e in op.effects)
    return msg


def op_from_pb(msg: map_pb2.Op) -> Op:
    effects = tuple(effect_from_pb(e) for e in msg.effects) if len(msg.effects) else ()
    return Op(
        msg.code,
        msg.partition,
        msg.map,
        msg.key,
        msg.value,
        msg.expect,
        msg.ttl,
        msg.version,
        effects,
    )


def result_to_pb(result: Result) -> map_pb2.Result:
    msg = map_pb2.Result(
        status=result.status,
        value=result.value,
        found=result.found,
        count=result.count,
        message=result.message,
    )
    if result.keys:
        msg.keys.extend(result.keys)
    if result.values:
        msg.values.extend(result.values)
    return msg


def result_from_pb(msg: map_pb2.Result) -> Result:
    return Result(
        msg.status,
        msg.value,
        msg.found,
        msg.count,
        list(msg.keys) if len(msg.keys) else None,
        list(msg.values) if len(msg.values) else None,
        msg.message,
    )


def frame_to_pb(
    frame_id: int, cluster: str, table_version: int, sender: str, ops: Sequence[Op]
) -> map_pb2.Frame:
    return map_pb2.Frame(
        id=frame_id,
        cluster=cluster,
        table_version=table_version,
        sender=sender,
        ops=[op_to_pb(op) for op in ops],
    )


def frame_result_to_pb(frame_id: int, table_version: int, results: Sequence[Result]) -> map_pb2.FrameResult:
    return map_pb2.FrameResult(
        id=frame_id, table_version=table_version, results=[result_to_pb(r) for r in results]
    )


def chunk_to_pb(chunk: Chunk, cluster: str) -> replication_pb2.PartitionChunk:
    return replication_pb2.PartitionChunk(
        cluster=cluster,
        partition=chunk.partition,
        version=chunk.version,
        entries=[effect_to_pb(e) for e in chunk.entries],
        last=chunk.last,
        list_version=chunk.list_version,
        sender=chunk.sender,
    )


def chunk_from_pb(msg: replication_pb2.PartitionChunk) -> Chunk:
    return Chunk(
        partition=msg.partition,
        version=msg.version,
        entries=tuple(effect_from_pb(e) for e in msg.entries),
        last=msg.last,
        list_version=msg.list_version,
        sender=msg.sender,
    )
