"""The member's gRPC server: servicers that only decode, call the domain, encode.

Every request names its cluster; a request from another cluster is refused
with PERMISSION_DENIED naming both names. A handler that fails answers with an
error status and the member keeps serving: nothing a peer sends can stop it.

Requests are untrusted until checked: a malformed one gets INVALID_ARGUMENT,
one over a limit RESOURCE_EXHAUSTED (a frame with more than
``limits.max_batch_ops`` operations; on the frame stream every op of such a
frame is answered INVALID instead, so the stream survives), and neither
changes anything. Every map name a request carries is checked as the maps
check theirs (at most 255 characters), every member uuid as members check
theirs, before anything is looked up by it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, NoReturn, Protocol, TypeVar, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from peergrid.config import GridConfig, Limits, is_loopback
from peergrid.errors import (
    BindError,
    ClusterNameMismatchError,
    LimitExceededError,
    PeerGridError,
    TLSConfigError,
)
from peergrid.events.model import EventBatch
from peergrid.protocol import (
    MAX_MEMBERS,
    WRITES,
    Answered,
    Chunk,
    Copy,
    HeartbeatReply,
    HeartbeatStatus,
    JoinReply,
    Member,
    MemberList,
    Op,
    RelayedBeat,
    Result,
    Status,
    Terms,
    map_name_problem,
    settled,
    uuid_problem,
)
from peergrid.transport import convert, frames
from peergrid.transport._pb import (
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    map_pb2,
    map_pb2_grpc,
    membership_pb2,
    membership_pb2_grpc,
    replication_pb2,
    replication_pb2_grpc,
)

log = logging.getLogger("peergrid.transport")

T = TypeVar("T")


class Handlers(Protocol):
    """What the member does with each request (implemented by the node)."""

    cluster: str
    uuid: str

    async def join(self, member: Member, terms: Terms, probe: bool) -> JoinReply: ...
    def heartbeat(self, uuid: str, list_version: int, list_master: str = "") -> HeartbeatReply: ...
    async def relay(
        self, beats: tuple[RelayedBeat, ...], master: str
    ) -> tuple[list[HeartbeatReply | None], float | None]: ...
    def publish(self, members: MemberList) -> None: ...
    def current_members(self) -> MemberList: ...
    def member_list(self) -> MemberList: ...  # what GetMembers answers (with this member's standing)
    async def leave(self, uuid: str, final: bool) -> None: ...
    async def merge(self, into: MemberList) -> None: ...
    def safe_state(self, merging: bool = False) -> tuple[bool, int, str]: ...
    def frame(
        self, sender: str, table_version: int, ops: list[Op], frame_id: int = 0
    ) -> list[Result | asyncio.Future[Result]]: ...
    async def versions(
        self, members: MemberList, partitions: list[int]
    ) -> tuple[int, dict[int, Copy | None]]: ...
    def fetch(self, members: MemberList, partition: int) -> AsyncIterator[Chunk]: ...
    async def install(self, chunks: AsyncIterator[Chunk]) -> str: ...
    def release(self, list_version: int, partitions: list[int]) -> None: ...
    def subscribe(
        self, name: str, values: bool, entries: bool, heartbeat_interval: float, peer: str
    ) -> AsyncGenerator[EventBatch, None]: ...
    def map_stats(self, name: str) -> dict[str, float]: ...


def grpc_options(limits: Limits) -> list[tuple[str, Any]]:
    """Channel and server options shared by both ends."""
    return [
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.enable_retries", 0),  # peergrid retries with its own deadlines
    ]


class Malformed:
    """What a request that is not a valid protobuf message of its type decodes to.

    grpc would answer a deserializer's exception with UNKNOWN (and log it as
    a server error); handing the handler this value lets it answer
    INVALID_ARGUMENT like any other malformed request.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.cluster = None  # read by _guarded's cluster check

    def refuse(self) -> NoReturn:
        """Raise the error that answers this request."""
        raise DecodeError(self.reason)


#: Methods whose requests carry a few names and numbers only, and the most bytes such a request
#: can take with every name at its longest (255 characters of up to 4 bytes each). A longer one
#: is refused unparsed: parsing tens of MB only to refuse a name costs the loop ~0.1 s.
_SMALL_REQUESTS = frozenset(
    {"Join", "Heartbeat", "Beats", "GetMembers", "Leave", "SafeState", "Subscribe", "MapStats"}
)
_SMALL_REQUEST_BYTES = 8 * 1024


def _parser(cls: type[Message], max_bytes: int | None = None) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        if max_bytes is not None and len(data) > max_bytes:
            return Malformed(
                f"a {cls.DESCRIPTOR.name} of {len(data)} bytes; a valid one has at most {max_bytes}"
            )
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(f"not a {cls.DESCRIPTOR.full_name}: {exc}")

    return parse


def _register(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Serve ``service``'s methods with ``servicer``'s methods of the same names."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for method in service.methods:
        kind = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=_parser(
                message_factory.GetMessageClass(method.input_type),
                _SMALL_REQUEST_BYTES if method.name in _SMALL_REQUESTS else None,
            ),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _status(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status that answers a request which failed with ``exc``, or None for a bug."""
    if isinstance(exc, LimitExceededError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, ClusterNameMismatchError):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, PeerGridError):
        return grpc.StatusCode.FAILED_PRECONDITION, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError | TypeError | UnicodeDecodeError | DecodeError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}"
    return None


def _guarded(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn failures of a handler into error statuses; never let one escape."""

    @functools.wraps(method)
    async def wrapper(self: _Base, request: Any, context: grpc.aio.ServicerContext) -> T:
        cluster = getattr(request, "cluster", None)
        if cluster is not None and cluster != self.handlers.cluster:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, self.mismatch(cluster))
        try:
            if isinstance(request, Malformed):
                request.refuse()
            return await method(self, request, context)
        except Exception as exc:
            status = _status(exc)
            if status is None:
                raise
        # Aborted outside the except block, the request dropped: grpc keeps the abort's
        # traceback for a while, and through it the refused request (it may be large).
        del request
        await context.abort(*status)
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper


class _Base:
    def __init__(self, handlers: Handlers, config: GridConfig) -> None:
        self.handlers = handlers
        self.limits = config.limits
        self.partition_count = config.partition_count

    def check_partitions(self, partitions: Any) -> list[int]:
        """A request's partition list; ``ValueError`` when it is longer than the partitions."""
        if len(partitions) > self.partition_count:
            raise ValueError(
                f"the request names {len(partitions)} partitions; there are {self.partition_count}"
            )
        return list(partitions)

    @staticmethod
    def check_uuid(uuid: str, what: str, *, optional: bool = False) -> str:
        """A member uuid a request carries; ``ValueError`` when it could not be one."""
        problem = None if optional and not uuid else uuid_problem(uuid, what)
        if problem is not None:
            raise ValueError(problem)
        return uuid

    @staticmethod
    def check_map(name: str) -> str:
        """A map name a request carries; ``ValueError`` when it could not be one."""
        problem = map_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    def mismatch(self, cluster: str) -> str:
        return (
            f"this member belongs to cluster {self.handlers.cluster!r}; "
            f"the request came from cluster {cluster!r}"
        )


class _Membership(_Base, membership_pb2_grpc.MembershipServicer):  # type: ignore[misc]
    @_guarded
    async def Join(self, request: Any, context: Any) -> membership_pb2.JoinResponse:
        reply = await self.handlers.join(
            convert.member_from_pb(request.member), convert.terms_from_pb(request), request.probe
        )
        return convert.join_reply_to_pb(reply)

    @_guarded
    async def Heartbeat(self, request: Any, context: Any) -> membership_pb2.HeartbeatResponse:
        return await self._heartbeat(request)

    async def _heartbeat(self, request: Any) -> membership_pb2.HeartbeatResponse:
        """The answer to one heartbeat, unary or on the Beats stream (same checks: the caller
        checked the request's cluster; a malformed request or uuid raises), with the master's
        answers to the beats it carries for relaying (``cluster.relay``)."""
        if isinstance(request, Malformed):
            request.refuse()
        reply = self.handlers.heartbeat(
            self.check_uuid(request.uuid, "heartbeat uuid"),
            request.list_version,
            self.check_uuid(request.list_master, "heartbeat list master", optional=True),
        )
        answer = self._heartbeat_answer(request, reply)
        if request.relayed:
            if len(request.relayed) > MAX_MEMBERS:
                raise ValueError(
                    f"a heartbeat carries {len(request.relayed)} beats to relay, more than {MAX_MEMBERS}"
                )
            beats = tuple(
                RelayedBeat(self.check_uuid(b.uuid, "relayed heartbeat uuid"), b.list_version)
                for b in request.relayed
            )
            master = self.check_uuid(request.master, "relay master")
            answers, relay_in = await self.handlers.relay(beats, master)
            for relayed in answers:
                if relayed is None:
                    answer.relayed.add(answered=False)
                elif relayed.status == HeartbeatStatus.UNANSWERED:
                    answer.relayed.add(answered=False, unanswered=True)
                else:
                    answer.relayed.add(
                        answered=True,
                        status=relayed.status,
                        list_version=relayed.list_version,
                        uncounted=not relayed.counted,
                        uuid=relayed.uuid,
                    )
            if relay_in is not None:
                answer.relay_in_ms = round(relay_in * 1000)
        return answer

    def _heartbeat_answer(self, request: Any, reply: HeartbeatReply) -> membership_pb2.HeartbeatResponse:
        return membership_pb2.HeartbeatResponse(
            status=reply.status,  # type: ignore[arg-type]
            list_version=reply.list_version,
            cluster=self.handlers.cluster,
            uuid=self.handlers.uuid,
            leaving=reply.leaving,
            seq=request.seq,
            master_heard_ms=None if reply.master_heard is None else round(reply.master_heard * 1000),
            uncounted=not reply.counted,
        )

    async def Beats(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[membership_pb2.HeartbeatResponse]:
        """Heartbeats on one long-lived stream: each answered in turn, as ``Heartbeat`` answers
        it, with the seq of its request (the caller matches replies to requests by seq).

        A request ``Heartbeat`` would refuse ends the stream with the status it would answer
        (PERMISSION_DENIED for another cluster, INVALID_ARGUMENT for a malformed one); the
        caller opens a new stream for its next heartbeat. The member keeps serving.
        """
        refusal: tuple[grpc.StatusCode, str] | None = None
        try:
            async for request in request_iterator:
                cluster = getattr(request, "cluster", None)  # None: malformed, refused below
                if cluster is not None and cluster != self.handlers.cluster:
                    refusal = grpc.StatusCode.PERMISSION_DENIED, self.mismatch(cluster)
                    break
                try:
                    reply = await self._heartbeat(request)
                except Exception as exc:
                    refusal = _status(exc)
                    if refusal is None:
                        log.exception("a heartbeat on a Beats stream failed")
                        refusal = grpc.StatusCode.UNKNOWN, "internal error on the serving member"
                    break
                yield reply
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the member keeps serving whatever one stream did
            if (
                isinstance(exc, grpc.RpcError)
                or "Stopped" in type(exc).__name__
                or "Abort" in type(exc).__name__
            ):
                log.debug("heartbeat stream ended: %r", exc)  # the caller went away, or we stop
            else:
                log.exception("heartbeat stream failed")
        if refusal is not None:
            request = None  # see _guarded
            await context.abort(*refusal)

    @_guarded
    async def Publish(self, request: Any, context: Any) -> common_pb2.Ack:
        self.handlers.publish(convert.members_from_pb(request.members))
        return common_pb2.Ack(ok=True)

    @_guarded
    async def GetMembers(self, request: Any, context: Any) -> common_pb2.MemberList:
        return convert.members_to_pb(self.handlers.member_list(), self.handlers.cluster)

    @_guarded
    async def Leave(self, request: Any, context: Any) -> common_pb2.Ack:
        await self.handlers.leave(self.check_uuid(request.uuid, "leaving uuid"), request.final)
        return common_pb2.Ack(ok=True)

    @_guarded
    async def Merge(self, request: Any, context: Any) -> common_pb2.Ack:
        await self.handlers.merge(convert.members_from_pb(request.into))
        return common_pb2.Ack(ok=True)

    @_guarded
    async def SafeState(self, request: Any, context: Any) -> membership_pb2.SafeStateResponse:
        safe, version, detail = self.handlers.safe_state(request.merging)
        return membership_pb2.SafeStateResponse(safe=safe, list_version=version, detail=detail)


class _Maps(_Base, map_pb2_grpc.MapServiceServicer):  # type: ignore[misc]
    @_guarded
    async def Execute(self, request: Any, context: Any) -> map_pb2.FrameResult:
        too_big = self._oversized(request)
        if too_big is not None:
            raise LimitExceededError(too_big)
        ops, outcomes = self._run(request)
        # Awaited through a future of its own: this call's cancellation must not cancel the ops'.
        if _waits(outcomes):
            results = await _gathered(ops, outcomes)
        else:
            results = cast(list[Result], outcomes)
        return frames.results_to_pb(request.id, self.handlers.current_members().version, results)

    def _oversized(self, frame: Any) -> str | None:
        """Why a frame is over ``limits.max_batch_ops``, or None."""
        limit = self.limits.max_batch_ops
        ops, effects = len(frame.codes), len(frame.effect_kinds)
        if ops > limit:
            return f"frame of {ops} operations exceeds limits.max_batch_ops={limit}"
        if effects > limit:
            return f"frame of {effects} backup effects exceeds limits.max_batch_ops={limit}"
        return None

    def _run(
        self, frame: Any, stream: bool = False
    ) -> tuple[list[Op], list[Result | asyncio.Future[Result]]]:
        """The frame's ops and each one's result or future (no ops: the frame was refused whole).
        ``stream``: it came on a frame stream, whose sender may take a write's result from its
        backup copy (``protocol.with_reply``)."""
        problem = self._oversized(frame)
        if problem is None:
            try:
                self.check_uuid(frame.sender, "frame sender", optional=True)
                ops = frames.ops_from_pb(frame)
            except ValueError as exc:
                problem = f"malformed frame: {exc}"
        if problem is not None:
            # Refuse the whole frame, answering every op it claims to carry (one message: the
            # answer to a frame of many ops must stay small).
            count = len(frame.codes)
            refused: list[Result | asyncio.Future[Result]] = [Result(Status.INVALID, message=problem)]
            return [], refused + [Result(Status.INVALID)] * (count - 1)
        return ops, self.handlers.frame(frame.sender, frame.table_version, ops, frame.id if stream else 0)

    async def Stream(self, request_iterator: Any, context: Any) -> None:
        """Frames in, results out as each frame completes (not necessarily in order).

        Frames that complete at once are answered inline, with no task or queue in between
        (each hop through the loop costs more than a small frame). A frame that waits (a write
        for its backups) is answered from the callback of the last op it waited for, its write
        stepped from there as a task would step it (``_drive``), not by a task of its own:
        that saves a task's first step and a pass of the loop on every write with a backup.
        Writes never overlap: grpc allows one at a time per stream, and answers written from
        callbacks take turns with a lock.
        """
        answers = _Answering(context, self.handlers.current_members, self.limits.max_message_bytes)
        refusal: tuple[grpc.StatusCode, str] | None = None
        try:
            async for frame in request_iterator:
                if isinstance(frame, Malformed):
                    frame.refuse()
                if frame.cluster != self.handlers.cluster:
                    refusal = grpc.StatusCode.PERMISSION_DENIED, self.mismatch(frame.cluster)
                    break
                ops, outcomes = self._run(frame, stream=True)
                if _waits(outcomes):
                    answers.later(frame.id, ops, outcomes)
                else:
                    await answers.write(frame.id, cast(list[Result], outcomes))
            if refusal is None:
                await answers.drained()  # the stream ends once every frame is answered
        except (ValueError, TypeError, UnicodeDecodeError, DecodeError) as exc:
            refusal = grpc.StatusCode.INVALID_ARGUMENT, f"malformed frame: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the member keeps serving whatever one stream did
            if (
                isinstance(exc, grpc.RpcError)
                or "Stopped" in type(exc).__name__
                or "Abort" in type(exc).__name__
            ):
                log.debug("frame stream ended: %r", exc)  # the peer went away, or we stop
            else:
                log.exception("frame stream failed")
        if refusal is not None:
            log.warning("refused a frame stream from %s: %s", context.peer(), refusal[1])
            frame = None  # see _guarded
            await context.abort(*refusal)


class _Answering:
    """The answers of one frame stream: written inline by the stream's loop when a frame
    completes at once; from the callback of the last op it waited for when it does not (see
    ``_Maps.Stream``). Writes take turns: grpc allows one at a time per stream."""

    def __init__(self, context: Any, members: Callable[[], MemberList], max_bytes: int) -> None:
        self._context = context
        self._members = members
        self._max_bytes = max_bytes
        self._writing = asyncio.Lock()
        self._later = 0  # frames to be answered from callbacks, not written yet
        self._drained: asyncio.Future[None] | None = None  # resolved when _later is back to 0

    async def write(self, frame_id: int, results: list[Result]) -> None:
        """Write a frame's answer: in order, in as many messages as the limit needs (other
        frames' answers may pass between them: the caller matches each message to its frame)."""
        version = self._members().version
        for reply in frames.replies_to_pb(frame_id, version, results, self._max_bytes):
            if self._later:  # an answer from a callback may write meanwhile (this may be one)
                async with self._writing:
                    await self._context.write(reply)
            else:  # only the stream's loop writes, and it waits for this
                await self._context.write(reply)

    def later(self, frame_id: int, ops: list[Op], outcomes: list[Result | asyncio.Future[Result]]) -> None:
        """Answer a frame once its waiting ops finished, from the last one's callback."""
        self._later += 1
        _when_done(ops, outcomes, lambda results: self._answer(frame_id, results))

    def _answer(self, frame_id: int, results: list[Result]) -> None:
        if all(isinstance(result, Answered) for result in results):
            # Its sender took every result from its backup copies of the writes: no answer
            # (``Replicator.replicate``; the sender's pipe ended the frame as it took the last).
            self._answered()
        else:  # an op a copy answered is answered again here: the sender keeps the first
            _drive(self.write(frame_id, results), self._answered)

    def _answered(self) -> None:
        self._later -= 1
        if self._later == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drained(self) -> None:
        """Return once every frame is answered (the ops' futures are never cancelled here: a
        write's dirty-read fence must hold until its backups acked, whoever went away)."""
        if self._later:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained


def _waits(outcomes: list[Result | asyncio.Future[Result]]) -> bool:
    """Whether some op of a frame has not finished yet."""
    return not all(isinstance(o, Result) for o in outcomes)


def _result_of(outcome: Result | asyncio.Future[Result], op: Op) -> Result:
    """The result of a finished op; a future's failure answered (``settled``): a write's as
    INDETERMINATE (it may have been applied, here or on backups), a read's as ERROR."""
    if isinstance(outcome, Result):
        return outcome
    return settled(outcome, Status.INDETERMINATE if op.code in WRITES else Status.ERROR)


def _when_done(
    ops: list[Op], outcomes: list[Result | asyncio.Future[Result]], then: Callable[[list[Result]], None]
) -> None:
    """Call ``then`` with the frame's results from the callback of the last op that finishes
    (its results read whoever still waits: a failure is logged, never left unread)."""
    futures = [o for o in outcomes if not isinstance(o, Result)]
    remaining = len(futures)

    def one(_: asyncio.Future[Result]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            then([_result_of(o, op) for o, op in zip(outcomes, ops, strict=True)])

    for future in futures:
        future.add_done_callback(one)


def _gathered(ops: list[Op], outcomes: list[Result | asyncio.Future[Result]]) -> asyncio.Future[list[Result]]:
    """A future of the frame's results, once every op finished. Its own future: cancelling
    it (the unary call ended) leaves the ops' futures alone."""
    done: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
    _when_done(ops, outcomes, lambda results: None if done.done() else done.set_result(results))
    return done


def _drive(step: Coroutine[Any, Any, None], ended: Callable[[], None]) -> None:
    """Run ``step`` from this callback on as a task would, without one: on until it waits, then
    on again from the callback of what it waits for; ``ended()`` once it returned or failed
    (an answer to a stream that ended fails: the caller went away, nothing to tell)."""
    try:
        waiting = step.send(None)
    except StopIteration:
        ended()
        return
    except (Exception, asyncio.CancelledError) as exc:  # logged (see below), and the stream goes on
        if _call_ended(exc):
            log.debug("an answer was not written: %r", exc)
        else:
            log.exception("an answer could not be written")
        ended()
        return
    if waiting is None:  # a bare yield: on in the next pass
        asyncio.get_running_loop().call_soon(_drive, step, ended)
    else:
        waiting._asyncio_future_blocking = False
        waiting.add_done_callback(lambda _: _drive(step, ended))


def _call_ended(exc: BaseException) -> bool:
    """Whether ``exc`` is how grpc fails a write to a call that ended (the caller went away, the
    server stops): nothing to tell anyone. Anything else is a bug, worth its traceback."""
    name = type(exc).__name__
    return (
        isinstance(exc, asyncio.CancelledError | grpc.RpcError | grpc.aio.UsageError | grpc.aio.AbortError)
        or "Stopped" in name
        or "ExecuteBatch" in name
    )


class _Replication(_Base, replication_pb2_grpc.ReplicationServicer):  # type: ignore[misc]
    @_guarded
    async def Versions(self, request: Any, context: Any) -> replication_pb2.VersionsResponse:
        list_version, versions = await self.handlers.versions(
            convert.members_from_pb(request.members), self.check_partitions(request.partitions)
        )
        return replication_pb2.VersionsResponse(
            list_version=list_version,
            versions=[
                replication_pb2.PartitionVersion(
                    partition=p,
                    present=v is not None,
                    version=v.version if v is not None else 0,
                    replicated=v is not None and v.replicated,
                )
                for p, v in versions.items()
            ],
        )

    async def Fetch(self, request: Any, context: Any) -> AsyncIterator[replication_pb2.PartitionChunk]:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.reason}")
        if request.cluster != self.handlers.cluster:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, self.mismatch(request.cluster))
        if not 0 <= request.partition < self.partition_count:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed request: partition {request.partition} is out of range "
                f"0..{self.partition_count - 1}",
            )
        status: tuple[grpc.StatusCode, str] | None = None
        try:
            chunks = self.handlers.fetch(convert.members_from_pb(request.members), request.partition)
            async for chunk in chunks:
                yield convert.chunk_to_pb(chunk, self.handlers.cluster)
        except Exception as exc:
            status = _status(exc)
            if status is None:
                raise
        if status is not None:
            await context.abort(*status)

    @_guarded
    async def Install(self, request_iterator: Any, context: Any) -> common_pb2.Ack:
        cluster = self.handlers.cluster

        async def chunks() -> AsyncIterator[Chunk]:
            async for msg in request_iterator:
                if isinstance(msg, Malformed):
                    msg.refuse()
                if msg.cluster != cluster:
                    raise ClusterNameMismatchError(self.mismatch(msg.cluster))
                yield convert.chunk_from_pb(msg)

        outcome = await self.handlers.install(chunks())
        return common_pb2.Ack(ok=True, reason=outcome)

    @_guarded
    async def Release(self, request: Any, context: Any) -> common_pb2.Ack:
        self.handlers.release(request.list_version, self.check_partitions(request.partitions))
        return common_pb2.Ack(ok=True)


class _Events(_Base, events_pb2_grpc.EventsServicer):  # type: ignore[misc]
    async def Subscribe(self, request: Any, context: Any) -> AsyncIterator[events_pb2.EventBatch]:
        """Events of one map, until the subscriber goes away or falls behind.

        Refused with INVALID_ARGUMENT (a malformed request, a heartbeat interval
        out of range) or RESOURCE_EXHAUSTED (over the subscription caps); a
        subscriber that falls behind gets RESOURCE_EXHAUSTED, or its stream is
        cancelled if a write to it is stuck; one that leaves the cluster gets
        FAILED_PRECONDITION (``peergrid.events.publisher``).
        """
        refusal = self._subscription_refusal(request)
        if refusal is not None:
            del request  # see _guarded
            await context.abort(*refusal)
            return
        # Members name themselves; anyone else counts by address (caps per peer).
        peer = request.subscriber or _host(context.peer())
        try:
            batches = self.handlers.subscribe(
                request.map, request.values, request.entries, request.heartbeat_interval, peer
            )
        except LimitExceededError as exc:
            log.info("refused an event subscription from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            return
        ended: tuple[grpc.StatusCode, str] | None = None
        try:
            async for batch in batches:
                message = convert.events_to_pb(batch)
                del batch  # not kept alive while the message is written: it may be large
                yield message
        except PeerGridError as exc:  # dropped: it fell behind, or left the cluster
            ended = _status(exc)
        finally:
            await batches.aclose()
        if ended is not None:
            await context.abort(*ended)

    def _subscription_refusal(self, request: Any) -> tuple[grpc.StatusCode, str] | None:
        """The status refusing a subscription request, or None to serve it."""
        if isinstance(request, Malformed):
            return grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.reason}"
        if request.cluster != self.handlers.cluster:
            return grpc.StatusCode.PERMISSION_DENIED, self.mismatch(request.cluster)
        problem = map_name_problem(request.map)
        if problem is None and request.subscriber:
            problem = uuid_problem(request.subscriber, "subscriber uuid")
        floor = self.limits.min_heartbeat_interval
        if problem is None and not floor <= request.heartbeat_interval <= _MAX_HEARTBEAT:
            problem = (
                f"heartbeat_interval {request.heartbeat_interval:g}s is out of range: this member sends "
                f"heartbeats every {floor:g} to {_MAX_HEARTBEAT:g} seconds (limits.min_heartbeat_interval)"
            )
        if problem is not None:
            return grpc.StatusCode.INVALID_ARGUMENT, f"malformed subscription: {problem}"
        return None

    @_guarded
    async def MapStats(self, request: Any, context: Any) -> events_pb2.MapStatsResponse:
        return events_pb2.MapStatsResponse(values=self.handlers.map_stats(self.check_map(request.map)))


_MAX_HEARTBEAT = 60.0  # seconds: the longest heartbeat interval a subscription may ask for


def _host(peer: str) -> str:
    """The host of a grpc peer string (``ipv4:10.0.0.5:41234``, ``ipv6:[::1]:41234``)."""
    _, _, address = peer.partition(":")
    host, colon, port = address.rpartition(":")
    return host if colon and port.isdigit() else address or peer


def server_credentials(config: GridConfig) -> grpc.ServerCredentials | None:
    """Mutual TLS credentials when configured: client certificates are required."""
    if config.tls is None:
        return None
    return grpc.ssl_server_credentials(
        [(config.tls.private_key, config.tls.certificate)],
        root_certificates=config.tls.ca_certificate,
        require_client_auth=True,
    )


def address_problem(host: str, port: int) -> BindError | None:
    """Why ``host:port`` cannot be bound, or None: the host resolved, then a plain socket bound
    to the same address and closed. Asked before grpc binds (grpc says only that binding
    failed, and logs the cause to stderr) and again after it failed."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    fix = "pass bind='HOST:PORT' with an address of this machine (port 0: any free port)"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError, ValueError) as exc:
        return BindError(
            f"cannot bind {address}: {host!r} is not a valid host name or IP address ({exc}); {fix}", address
        )
    family, kind, proto, _, sockaddr = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = f"port {port} is already in use (by another member or program); pick another port, or 0"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine; {fix}"
        elif exc.errno == errno.EACCES:
            why = f"port {port} needs privileges to bind; use a port above 1023"
        else:
            why = f"{exc.strerror}; {fix}"
        return BindError(f"cannot bind {address}: {why}", address)
    return None


def bind_error(host: str, port: int, *, tls: bool) -> PeerGridError:
    """Why grpc could not bind ``host:port``, as an error a person can act on. When the address
    binds as a plain socket, the address was fine and the TLS credentials were not."""
    problem = address_problem(host, port)
    if problem is not None:
        return problem
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls:
        return TLSConfigError(
            f"cannot serve TLS on {address}: grpc refused this member's TLS credentials (the "
            "private key does not match the certificate, or a file holds something else); check "
            "tls=TLSConfig.from_files(certificate, private_key, ca_certificate): the order matters",
            address,
        )
    return BindError(f"cannot bind {address}: grpc refused the address (see its log above)", address)


class Server:
    """The member's gRPC server, bound on start."""

    def __init__(self, config: GridConfig, handlers: Handlers) -> None:
        self._config = config
        self._handlers = handlers
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Bind and start serving; return the bound port (a free one for port 0)."""
        options = [*grpc_options(self._config.limits), ("grpc.so_reuseport", 0)]
        server = grpc.aio.server(options=options)
        handlers, config = self._handlers, self._config
        services = (
            membership_pb2.DESCRIPTOR,
            map_pb2.DESCRIPTOR,
            replication_pb2.DESCRIPTOR,
            events_pb2.DESCRIPTOR,
        )
        servicers = (_Membership, _Maps, _Replication, _Events)
        for module, servicer in zip(services, servicers, strict=True):
            [service] = module.services_by_name.values()
            _register(server, service, servicer(handlers, config))
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        credentials = server_credentials(self._config)
        problem = address_problem(host, port)
        if problem is not None:
            raise problem
        try:
            if credentials is None:
                self.port = server.add_insecure_port(target)
            else:
                self.port = server.add_secure_port(target, credentials)
        except RuntimeError as exc:
            raise bind_error(host, port, tls=credentials is not None) from exc
        if self.port == 0:
            raise bind_error(host, port, tls=credentials is not None)
        await server.start()
        self._server = server
        if credentials is None and not is_loopback(host):
            log.warning(
                "member %s:%d serves without TLS on a non-loopback address: anyone who can reach "
                "this port can read and write every map, and join or disrupt the cluster; configure "
                "tls=peergrid.TLSConfig(...) (docs/operations.md, 'Security'), or bind 127.0.0.1",
                host,
                self.port,
            )
        return self.port

    async def stop(self, grace: float | None) -> None:
        """Stop serving; ``grace`` seconds for calls in flight (None: cancel them)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
