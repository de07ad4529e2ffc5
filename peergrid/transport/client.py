"""Calls to peers: one channel per peer address, reused; errors translated once.

Every failure of a call surfaces as a ``PeerGridError``: an unreachable or
silent peer as ``PeerUnavailableError`` (retryable), a peer of another cluster
as ``ClusterNameMismatchError``,
anything else the peer reports as ``RemoteError``; each raised ``from`` the
grpc error. Errors are classified by grpc status code only, never by the words
of their details (a connection dropped by a network cut reads "tcp handshaker
shutdown", and is no TLS failure). Whether an unreachable peer failed in the
TLS layer is asked only where it changes what a member does (joining,
merging), and answered by a TLS handshake of our own (``tls_failure``), by the
type of the ``ssl`` error it raises. A call that grpc cancels because its channel was closed (the peer
left the list meanwhile) is a ``PeerUnavailableError`` too, not a
``CancelledError`` that would pass for the caller's own cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import grpc

from peergrid.config import GridConfig, TLSConfig, parse_address
from peergrid.errors import ClusterNameMismatchError, PeerUnavailableError, RemoteError, TLSError
from peergrid.events.model import EventBatch
from peergrid.protocol import (
    UNANSWERED,
    Chunk,
    Copy,
    HeartbeatReply,
    JoinReply,
    Member,
    MemberList,
    Op,
    RelayedBeat,
    Result,
    Terms,
)
from peergrid.transport import convert, frames
from peergrid.transport._pb import (
    events_pb2,
    events_pb2_grpc,
    map_pb2_grpc,
    membership_pb2,
    membership_pb2_grpc,
    replication_pb2,
    replication_pb2_grpc,
)
from peergrid.transport.server import grpc_options

log = logging.getLogger("peergrid.transport")

T = TypeVar("T")

_UNAVAILABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)

#: What grpc says when the peer's kernel refused or reset the connection: no process serves
#: the address (it died), as opposed to a deadline, which a live but starved process misses too.
_REFUSED = ("connection refused", "connection reset", "socket closed", "broken pipe")

_PROBE_TIMEOUT = 2.0  # seconds a TLS handshake of ``tls_failure`` may take


def _translate(address: str, exc: grpc.RpcError) -> NoReturn:
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    if code in _UNAVAILABLE or code is None:
        refused = code == grpc.StatusCode.UNAVAILABLE and any(
            sign in (details or "").lower() for sign in _REFUSED
        )
        raise PeerUnavailableError(
            f"peer {address} is unreachable ({details})", address=address, refused=refused
        ) from exc
    if code == grpc.StatusCode.PERMISSION_DENIED:
        raise ClusterNameMismatchError(f"peer {address} refused: {details}") from exc
    raise RemoteError(f"peer {address} answered {code.name}: {details}") from exc


def _closed_under(address: str) -> NoReturn:
    """A call raised CancelledError: re-raise it if our task is being cancelled; else grpc
    cancelled the call because its channel was closed (the peer left the list meanwhile).
    (``PeerClient._call`` does the same inline.)"""
    task = asyncio.current_task()
    if task is None or task.cancelling():
        raise asyncio.CancelledError
    raise PeerUnavailableError(f"the call to peer {address} ended: its channel was closed", address=address)


class PeerClient:
    """Typed calls to one peer."""

    def __init__(
        self,
        address: str,
        channel: grpc.aio.Channel,
        cluster: str,
        timeout: float,
        tls: TLSConfig | None = None,
        me: str = "",
        beat_stale_after: float = 0.0,
    ) -> None:
        self.address = address
        self._beat_stale_after = beat_stale_after  # see BeatStream
        self._me = me  # this member's uuid: it names itself as subscriber
        self._tls = tls
        self._channel = channel
        self._cluster = cluster
        self._timeout = timeout
        self._membership = membership_pb2_grpc.MembershipStub(channel)
        self._maps = map_pb2_grpc.MapServiceStub(channel)
        self._replication = replication_pb2_grpc.ReplicationStub(channel)
        self._events = events_pb2_grpc.EventsStub(channel)
        self._beats: BeatStream | None = None  # heartbeats' stream to this peer, opened on use
        #: ``time.monotonic()`` of the last OK heartbeat reply from this peer, late ones included
        #: (a reply that came after its heartbeat gave up): evidence that it runs, only slowly.
        self.answered_at = float("-inf")
        self._beat_seq = 0  # seq of the last heartbeat sent: unique for this client's life
        self._readers: set[asyncio.Task[None]] = set()  # reader tasks of open and retired streams
        self._unary_beats_until = 0.0  # monotonic time until which heartbeats are unary calls
        self._closed = False  # closed by ``Peers``: no new heartbeat stream

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout or self._timeout)
        except grpc.RpcError as exc:
            _translate(self.address, exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own caller is being cancelled: let it be
            # grpc cancels calls in flight when their channel closes (the peer left the list).
            raise PeerUnavailableError(
                f"call to {self.address} was cancelled: its channel closed", address=self.address
            ) from None

    def _decoded(self, decode: Callable[[Any], T], msg: Any) -> T:
        """A peer's answer as a domain object; ``RemoteError`` when it is malformed."""
        try:
            return decode(msg)
        except ValueError as exc:
            raise RemoteError(f"peer {self.address} sent a malformed answer: {exc}") from exc

    async def join(
        self,
        member: Member,
        terms: Terms,
        timeout: float | None = None,
        probe: bool = False,
    ) -> JoinReply:
        """Ask to join; with ``probe``, only whether ``member`` would be admitted."""
        request = convert.join_request_to_pb(self._cluster, member, terms, probe)
        try:
            reply = await self._call(self._membership.Join, request, timeout)
        except PeerUnavailableError as exc:
            await self._raise_tls_failure(exc)
            raise
        return self._decoded(convert.join_reply_from_pb, reply)

    async def heartbeat(
        self,
        uuid: str,
        list_version: int,
        timeout: float | None = None,
        relayed: tuple[RelayedBeat, ...] = (),
        master: str = "",
        list_master: str = "",
    ) -> HeartbeatReply:
        """Heartbeat the peer; its answer, within ``timeout`` (default: the rpc timeout).
        ``relayed``: beats for the master ``master`` the peer is to carry up (or answer, if it
        is that master); its reply's ``relayed`` holds the master's answers. ``list_master``:
        the master of the sender's list version ``list_version``.

        Sent on this client's Beats stream (opened on first use; see ``BeatStream``), or as a
        unary call to a peer that does not serve Beats (a member of an earlier version).
        Raises ``PeerUnavailableError`` when the peer cannot be reached or does not answer in
        time, ``ClusterNameMismatchError`` or ``RemoteError`` when it refuses the heartbeat.
        """
        limit = timeout or self._timeout
        deadline = time.monotonic() + limit
        request = membership_pb2.HeartbeatRequest(
            cluster=self._cluster, uuid=uuid, list_version=list_version, list_master=list_master
        )
        if relayed:
            request.master = master
            for beat in relayed:
                request.relayed.add(uuid=beat.uuid, list_version=beat.list_version)
        if time.monotonic() >= self._unary_beats_until:
            try:
                reply = await self._beat_on_stream(request, limit)
            except _UnimplementedError:
                # A member of an earlier version: unary calls for a while, then the stream again
                # (the address may be served by a newer process by then).
                self._unary_beats_until = time.monotonic() + _UNARY_BEATS_FOR
                request.seq = 0
            else:
                return _heartbeat_reply(reply)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerUnavailableError(
                f"peer {self.address} did not answer a heartbeat within {limit:g}s", address=self.address
            )
        return _heartbeat_reply(await self._call(self._membership.Heartbeat, request, remaining))

    def _answered(self) -> None:
        self.answered_at = time.monotonic()

    async def _beat_on_stream(self, request: Any, timeout: float) -> Any:
        """Send one heartbeat on the current Beats stream (a new one if there is none) and
        return the reply to it. A stream that failed or timed out is retired: the next
        heartbeat opens a new stream (``BeatStream.retire``)."""
        self._beat_seq += 1
        request.seq = self._beat_seq
        beats = self._beats
        if beats is None or beats.retired:
            if self._closed:
                raise PeerUnavailableError(
                    f"the client of peer {self.address} is closed", address=self.address
                )
            try:
                call = self._membership.Beats()
            except grpc.aio.UsageError as exc:  # its channel was closed (the peer left the list)
                raise PeerUnavailableError(
                    f"the channel to peer {self.address} is closed", address=self.address
                ) from exc
            beats = self._beats = BeatStream(
                self.address, call, self._reaped, self._beat_stale_after, self._answered
            )
        return await beats.ask(request, timeout)

    async def close(self) -> None:
        """Cancel this client's heartbeat streams and wait for their tasks to end (its channel is
        closed by ``Peers``)."""
        self._closed = True
        beats, self._beats = self._beats, None
        if beats is not None:
            beats.retire()
        readers = list(self._readers)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    def _reaped(self, reader: asyncio.Task[None]) -> None:
        """Keep each stream's reader task until it ends (the loop holds tasks weakly only)."""
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    async def publish(self, members: MemberList, timeout: float | None = None) -> None:
        request = membership_pb2.PublishRequest(
            cluster=self._cluster, members=convert.members_to_pb(members, self._cluster)
        )
        await self._call(self._membership.Publish, request, timeout)

    async def get_members(self, timeout: float | None = None, diagnose: bool = False) -> MemberList:
        """The peer's member list; with ``diagnose``, ``TLSError`` when it failed in the TLS layer."""
        request = membership_pb2.GetMembersRequest(cluster=self._cluster)
        try:
            reply = await self._call(self._membership.GetMembers, request, timeout)
        except PeerUnavailableError as exc:
            if diagnose:
                await self._raise_tls_failure(exc)
            raise
        return self._decoded(convert.members_from_pb, reply)

    async def _raise_tls_failure(self, exc: PeerUnavailableError) -> None:
        """Raise ``TLSError`` from ``exc`` when the peer fails a TLS handshake of our own."""
        if self._tls is None:
            if await speaks_tls(self.address):
                raise TLSError(
                    f"peer {self.address} serves TLS and this member does not: members must all use "
                    "TLS; start this one with tls=peergrid.TLSConfig.from_files(...) (the cluster's "
                    "CA and a certificate it signed)",
                    address=self.address,
                ) from exc
            return
        why = await tls_failure(self.address, self._tls)
        if why is not None:
            raise TLSError(
                f"peer {self.address} failed the TLS handshake ({why}): members must all use TLS "
                "with certificates of one CA that name the address dialled (or tls.server_name)",
                address=self.address,
            ) from exc

    async def leave(self, uuid: str, final: bool, timeout: float | None = None) -> None:
        request = membership_pb2.LeaveRequest(cluster=self._cluster, uuid=uuid, final=final)
        await self._call(self._membership.Leave, request, timeout)

    async def merge(self, into: MemberList, timeout: float | None = None) -> None:
        """Ask the peer to merge its instance of the cluster into the one ``into`` lists."""
        request = membership_pb2.MergeRequest(
            cluster=self._cluster, into=convert.members_to_pb(into, self._cluster)
        )
        await self._call(self._membership.Merge, request, timeout)

    async def safe_state(self, timeout: float | None = None, merging: bool = False) -> tuple[bool, int, str]:
        """Whether the peer is safe, at which list version, and if not, why (``merging``: asked
        by a master deciding whether its instance may merge into another)."""
        request = membership_pb2.SafeStateRequest(cluster=self._cluster, merging=merging)
        reply = await self._call(self._membership.SafeState, request, timeout)
        return reply.safe, reply.list_version, reply.detail

    async def execute(
        self, table_version: int, sender: str, ops: Sequence[Op], timeout: float | None = None
    ) -> list[Result]:
        """One frame as a unary call."""
        request = frames.ops_to_pb(0, self._cluster, table_version, sender, ops)
        reply = await self._call(self._maps.Execute, request, timeout)
        return frames.results_from_pb(reply)[2]

    async def versions(
        self, members: MemberList, partitions: Sequence[int], timeout: float | None = None
    ) -> tuple[int, dict[int, Copy | None]]:
        request = replication_pb2.VersionsRequest(
            cluster=self._cluster,
            members=convert.members_to_pb(members, self._cluster),
            partitions=partitions,
        )
        reply = await self._call(self._replication.Versions, request, timeout)
        return reply.list_version, {
            v.partition: (Copy(v.version, v.replicated) if v.present else None) for v in reply.versions
        }

    async def fetch(
        self, members: MemberList, partition: int, timeout: float | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """The chunks of one partition, streamed from the peer."""
        request = replication_pb2.FetchRequest(
            cluster=self._cluster,
            members=convert.members_to_pb(members, self._cluster),
            partition=partition,
        )
        call = self._replication.Fetch(request, timeout=timeout or self._timeout)
        try:
            async for msg in call:
                yield self._decoded(convert.chunk_from_pb, msg)
        except grpc.RpcError as exc:
            _translate(self.address, exc)
        finally:
            call.cancel()

    async def install(self, chunks: AsyncIterable[Chunk], timeout: float | None = None) -> str:
        """Stream a partition to the peer, which installs it once the last chunk arrives; what
        became of a restore (``Chunk.restore``), else ""."""
        cluster = self._cluster

        async def messages() -> AsyncIterator[Any]:
            async for chunk in chunks:
                yield convert.chunk_to_pb(chunk, cluster)

        try:
            ack = await self._replication.Install(messages(), timeout=timeout or self._timeout)
        except grpc.RpcError as exc:
            _translate(self.address, exc)
        except asyncio.CancelledError:
            _closed_under(self.address)
        return str(ack.reason)

    async def release(
        self, list_version: int, partitions: Sequence[int], timeout: float | None = None
    ) -> None:
        request = replication_pb2.ReleaseRequest(
            cluster=self._cluster, list_version=list_version, partitions=partitions
        )
        await self._call(self._replication.Release, request, timeout)

    async def subscribe(
        self, name: str, values: bool, entries: bool, heartbeat_interval: float
    ) -> AsyncIterator[EventBatch]:
        """Events of map ``name`` on this peer's partitions, until the stream ends."""
        request = events_pb2.SubscribeRequest(
            cluster=self._cluster,
            subscriber=self._me,
            map=name,
            values=values,
            entries=entries,
            heartbeat_interval=heartbeat_interval,
        )
        call = self._events.Subscribe(request)
        try:
            async for msg in call:
                try:
                    yield convert.events_from_pb(msg)
                except ValueError as exc:
                    raise RemoteError(f"peer {self.address} sent a malformed event batch: {exc}") from exc
        except grpc.RpcError as exc:
            _translate(self.address, exc)
        finally:
            call.cancel()

    async def map_stats(self, name: str, timeout: float | None = None) -> dict[str, float]:
        """This peer's statistics of map ``name``."""
        request = events_pb2.MapStatsRequest(cluster=self._cluster, map=name)
        reply = await self._call(self._events.MapStats, request, timeout)
        return dict(reply.values)

    async def open_stream(self) -> FrameStream:
        """A new long-lived frame stream to this peer, once its channel is connected.

        Waiting for the connection first means a peer that cannot be reached
        fails here, before any operation was sent (so none is in doubt).
        """
        try:
            await asyncio.wait_for(self._channel.channel_ready(), self._timeout)
        except TimeoutError:
            raise PeerUnavailableError(
                f"peer {self.address} cannot be reached (not connected within {self._timeout}s)",
                address=self.address,
            ) from None
        return FrameStream(self.address, self._cluster, self._maps.Stream())


class FrameStream:
    """Frames of operations out, frame results in, on one bidi stream."""

    def __init__(self, address: str, cluster: str, call: Any) -> None:
        self.address = address
        self._cluster = cluster
        self._call = call

    async def send(self, frame_id: int, table_version: int, sender: str, ops: Sequence[Op]) -> None:
        """Write one frame; raises ``PeerUnavailableError`` when the stream is broken."""
        try:
            await self._call.write(frames.ops_to_pb(frame_id, self._cluster, table_version, sender, ops))
        except grpc.RpcError as exc:
            _translate(self.address, exc)
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise PeerUnavailableError(f"stream to {self.address} is closed", address=self.address) from exc

    async def receive(self) -> tuple[int, int, list[Result]] | None:
        """The next frame result ``(frame_id, table_version, results)``, or None at the end."""
        try:
            msg = await self._call.read()
        except grpc.RpcError as exc:
            _translate(self.address, exc)
        if msg is grpc.aio.EOF:
            return None
        try:
            return frames.results_from_pb(msg)
        except ValueError as exc:
            raise RemoteError(f"peer {self.address} sent a malformed frame result: {exc}") from exc

    def cancel(self) -> None:
        """Abandon the stream (the peer sees CANCELLED)."""
        self._call.cancel()


class _UnimplementedError(Exception):
    """The peer does not serve Beats (a member of an earlier version): use the unary call."""


def _heartbeat_reply(reply: Any) -> HeartbeatReply:
    return HeartbeatReply(
        status=reply.status,
        list_version=reply.list_version,
        uuid=reply.uuid,
        leaving=reply.leaving,
        master_heard=reply.master_heard_ms / 1000 if reply.HasField("master_heard_ms") else None,
        counted=not reply.uncounted,
        relayed=tuple(
            HeartbeatReply(a.status, a.list_version, uuid=a.uuid, counted=not a.uncounted)
            if a.answered
            else (UNANSWERED if a.unanswered else None)
            for a in reply.relayed
        ),
        relay_in=reply.relay_in_ms / 1000 if reply.HasField("relay_in_ms") else None,
    )


_UNARY_BEATS_FOR = 60.0  # seconds of unary heartbeats to a peer that does not serve Beats


class BeatStream:
    """Heartbeats to one peer on one Beats stream: requests out, replies in, matched by seq.

    A reader task resolves each waiting heartbeat with the reply that carries its seq;
    a reply to no waiting heartbeat (one that timed out) is dropped. Seqs are unique for the
    life of the ``PeerClient``, so a reply is only ever taken for the request it answers.

    A heartbeat that fails retires the stream: no new heartbeat is sent on it (the next opens
    a new stream), and it is cancelled once the heartbeats still waiting on it are answered or
    time out (each keeps its own deadline, as separate calls would). One that times out
    retires it only once nothing came on it for ``stale_after`` seconds: an overloaded peer
    may take seconds to accept a new stream, and a stream cancelled for that (and the next
    one, and the next) would never deliver a heartbeat at all. When the stream ends, every
    heartbeat waiting on it fails with the translated status.
    """

    def __init__(
        self,
        address: str,
        call: Any,
        reap: Callable[[asyncio.Task[None]], None],
        stale_after: float = 0.0,
        on_ok: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self._on_ok = on_ok  # called at each OK reply, late ones too
        self.retired = False
        self._stale_after = stale_after
        self._heard = time.monotonic()  # when the stream opened, or last brought an answer
        self._call = call
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writing = asyncio.Lock()  # grpc allows one write at a time per stream
        self._ended: BaseException | None = None  # why the stream ended (its reader is done)
        self._written = 0  # heartbeats written on this stream
        self._answered = 0  # replies read on it
        self._reader = asyncio.ensure_future(self._read())
        reap(self._reader)

    async def ask(self, request: Any, timeout: float) -> Any:
        """The peer's reply to ``request`` (whose seq is unique), within ``timeout`` seconds."""
        if self._ended is not None:
            self.retire()
            self._raise(self._ended)
        seq = request.seq
        answered = asyncio.get_running_loop().create_future()
        self._pending[seq] = answered
        ok = False
        stage = "waiting to write"
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                try:
                    async with self._writing:
                        stage = "writing"
                        await self._call.write(request)
                        stage = "awaiting the reply"
                        self._written += 1
                except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                    pass  # the stream ended: its reader fails ``answered`` with the status
                reply = await answered
        except TimeoutError:
            timed_out = True
            log.debug(
                "heartbeat stream to %s: no answer within %gs, %s (%d written, %d answered on it)",
                self.address,
                timeout,
                stage,
                self._written,
                self._answered,
            )
            raise PeerUnavailableError(
                f"peer {self.address} did not answer a heartbeat within {timeout:g}s", address=self.address
            ) from None
        except grpc.RpcError as exc:
            self._raise(exc)
        else:
            ok = True
            return reply
        finally:
            self._pending.pop(seq, None)
            if not answered.done():
                answered.cancel()
            elif not answered.cancelled():
                answered.exception()  # retrieved: the stream may have ended while we wrote
            if not ok and (not timed_out or time.monotonic() - self._heard >= self._stale_after):
                self.retire()
            elif self.retired and not self._pending:
                self._call.cancel()

    def retire(self) -> None:
        """Send nothing more on this stream; cancel it once no heartbeat waits on it."""
        self.retired = True
        if not self._pending:
            self._call.cancel()

    async def _read(self) -> None:
        ended: BaseException = PeerUnavailableError(
            f"the heartbeat stream to peer {self.address} was closed", address=self.address
        )
        try:
            while True:
                reply = await self._call.read()
                if reply is grpc.aio.EOF:
                    ended = PeerUnavailableError(
                        f"peer {self.address} ended the heartbeat stream", address=self.address
                    )
                    return
                self._answered += 1
                self._heard = time.monotonic()
                if self._on_ok is not None and reply.status == membership_pb2.HeartbeatResponse.OK:
                    self._on_ok()
                answered = self._pending.get(reply.seq)
                if answered is not None and not answered.done():
                    answered.set_result(reply)
        except grpc.RpcError as exc:
            ended = exc
        except (grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the call was finished under us: closed
        except asyncio.CancelledError:
            # The stream was cancelled (retired, or its channel closed), or this task was.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        finally:
            # Whatever ended the stream, no heartbeat waits on it for nothing.
            self._ended = ended
            self.retired = True
            for answered in self._pending.values():
                if not answered.done():
                    answered.set_exception(
                        ended
                        if isinstance(ended, grpc.RpcError)  # translated by each waiter
                        else PeerUnavailableError(str(ended), address=self.address)
                    )

    def _raise(self, exc: BaseException) -> NoReturn:
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise _UnimplementedError from exc
        if isinstance(exc, grpc.RpcError):
            _translate(self.address, exc)
        raise PeerUnavailableError(str(exc), address=self.address)  # a new one for each waiter


def channel_credentials(config: GridConfig) -> grpc.ChannelCredentials | None:
    """Mutual TLS credentials when configured: the peer must present a certificate of the
    cluster CA, and this member presents its own."""
    if config.tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=config.tls.ca_certificate,
        private_key=config.tls.private_key,
        certificate_chain=config.tls.certificate,
    )


class Peers:
    """One channel per peer address, created on first use and reused.

    Only the member's loop thread uses this (grpc.aio objects belong to the loop
    that made them).
    """

    def __init__(self, config: GridConfig, me: str = "") -> None:
        self._config = config
        self._me = me
        self._clients: dict[str, PeerClient] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        reconnect_ms = max(50, int(config.timing.heartbeat_interval * 1000))
        self._options = [
            *grpc_options(config.limits),
            ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
            ("grpc.min_reconnect_backoff_ms", reconnect_ms),
            (
                "grpc.max_reconnect_backoff_ms",
                max(reconnect_ms, int(config.timing.failure_timeout * 1000)),
            ),
            # A channel of its own per peer: a new channel to an address (after dropping one
            # that backs off from an earlier failure) connects at once, not after the backoff
            # grpc's shared subchannel pool would carry over.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if config.tls is not None and config.tls.server_name:
            # Check every peer's certificate for the cluster's name, not the address dialled.
            self._options.append(("grpc.ssl_target_name_override", config.tls.server_name))
        self._credentials = channel_credentials(config)

    def get(self, address: str) -> PeerClient:
        """The client for ``address``."""
        client = self._clients.get(address)
        if client is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials, options=self._options)
            self._channels[address] = channel
            client = self._clients[address] = PeerClient(
                address,
                channel,
                self._config.cluster,
                self._config.timing.rpc_timeout,
                self._config.tls,
                self._me,
                # A heartbeat stream nothing came on for two failure timeouts is replaced.
                2 * self._config.timing.failure_timeout,
            )
        return client

    async def drop(self, address: str) -> None:
        """Close the channel to ``address`` (a peer that left)."""
        # Both popped before anything is awaited: a ``get`` meanwhile makes a new pair.
        client = self._clients.pop(address, None)
        channel = self._channels.pop(address, None)
        if client is not None:
            await client.close()
        if channel is not None:
            await channel.close(grace=None)

    async def close(self) -> None:
        """Close every channel."""
        channels = list(self._channels.values())
        clients = list(self._clients.values())
        self._clients.clear()
        self._channels.clear()
        for client in clients:
            await client.close()
        for channel in channels:
            await channel.close(grace=None)


def _client_context(tls: TLSConfig) -> ssl.SSLContext:
    """An ``ssl`` client context with our certificate, trusting the cluster CA (``ssl`` loads
    certificates only from files: they are written to a private temporary folder for it)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=tls.ca_certificate.decode("ascii"))
    with tempfile.TemporaryDirectory() as folder:
        paths = (os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"))
        for path, data in zip(paths, (tls.certificate, tls.private_key), strict=True):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as file:
                file.write(data)
        context.load_cert_chain(*paths)
    return context


async def tls_failure(address: str, tls: TLSConfig) -> str | None:
    """Why ``address`` fails a mutual TLS handshake with ``tls``, or None when it does not.

    The answer comes from the type of the error Python's ``ssl`` raises in a
    handshake of our own (with our certificate), then a read of the server's
    first bytes (a TLS 1.3 server refuses a client certificate after the
    client's handshake is done). A peer that cannot be reached, or answers,
    is no TLS failure: None.
    """
    host, port = parse_address(address)
    context = _client_context(tls)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=tls.server_name or host),
            _PROBE_TIMEOUT,
        )
    except ssl.SSLError as exc:
        return exc.reason or type(exc).__name__
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the HTTP/2 preface, so the server speaks
        await asyncio.wait_for(reader.read(1), _PROBE_TIMEOUT)
    except ssl.SSLError as exc:
        return exc.reason or type(exc).__name__
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), _PROBE_TIMEOUT)
    return None


async def speaks_tls(address: str) -> bool:
    """True when ``address`` answers a TLS handshake (asked of a peer a plaintext member cannot
    reach: a seed of a TLS cluster reads our HTTP/2 preface as garbage and hangs up, which grpc
    reports as UNAVAILABLE only). The handshake offers no certificate and checks none: it only
    asks whether the peer speaks TLS, and sends nothing else."""
    host, port = parse_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only a probe: nothing is sent over it
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), _PROBE_TIMEOUT)
    except ssl.SSLError as exc:
        # A TLS server that refuses us (it wants a client certificate) answers with an alert;
        # a plaintext server answers bytes that are no TLS record.
        return "ALERT" in (exc.reason or "")
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), _PROBE_TIMEOUT)
    return True
