"""Heartbeats on one Beats stream per (caller, peer): replies matched by seq, never to the wrong
request; a failed or late heartbeat retires its stream; dropping a peer cancels it; a peer of
an earlier version (no Beats) gets unary calls."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from peergrid.config import GridConfig, Timing
from peergrid.errors import ClusterNameMismatchError, PeerUnavailableError, RemoteError
from peergrid.protocol import HeartbeatReply, HeartbeatStatus, Member, MemberList
from peergrid.testing import cluster
from peergrid.transport import server as server_module
from peergrid.transport._pb import membership_pb2
from peergrid.transport.client import BeatStream, PeerClient, Peers
from tests.conftest import wait_for

CLUSTER = "beats"
ME = "member-a"
BEATS = "/peergrid.v1.Membership/Beats"
HEARTBEAT = "/peergrid.v1.Membership/Heartbeat"

Request = membership_pb2.HeartbeatRequest
Response = membership_pb2.HeartbeatResponse


class ScriptedPeer:
    """A grpc server whose Beats handler runs ``script`` for each request (and counts streams)."""

    def __init__(
        self,
        script: Callable[[Request, grpc.aio.ServicerContext], Awaitable[None]] | None = None,
        beats: bool = True,
    ) -> None:
        self.script = script or self.echo
        self.beats = beats
        self.streams = 0  # Beats streams opened
        self.open = 0  # Beats streams open now
        self.unary = 0  # unary Heartbeat calls
        self.writing = asyncio.Lock()
        self.changed = asyncio.Condition()  # notified when a stream opens or ends
        self.server: grpc.aio.Server | None = None

    @classmethod
    def held_until(cls, release: asyncio.Event) -> ScriptedPeer:
        """A peer that answers each heartbeat only once ``release`` is set."""

        async def script(request: Request, context: grpc.aio.ServicerContext) -> None:
            await release.wait()
            await peer.write(context, peer.reply(request))

        peer = cls(script)
        return peer

    @staticmethod
    def reply(request: Request, list_version: int | None = None, seq: int | None = None) -> Response:
        """An OK reply; by default to ``request`` (its seq), echoing its list version."""
        return Response(
            status=Response.OK,
            list_version=request.list_version if list_version is None else list_version,
            cluster=CLUSTER,
            uuid="peer-b",
            seq=request.seq if seq is None else seq,
        )

    async def echo(self, request: Request, context: grpc.aio.ServicerContext) -> None:
        await self.write(context, self.reply(request))

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        """Wait until ``condition()`` (checked as streams open and end); fail after ``timeout``."""
        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(condition)
        except TimeoutError:
            pytest.fail(f"{what} not met within {timeout}s")

    async def _count(self, change: int) -> None:
        async with self.changed:
            self.open += change
            self.changed.notify_all()

    async def write(self, context: grpc.aio.ServicerContext, response: Response) -> None:
        async with self.writing:
            await context.write(response)

    async def _beats(self, requests: AsyncIterator[Request], context: grpc.aio.ServicerContext) -> None:
        # A test ends by stopping this server, which cancels a handler still winding up the stream
        # its client just closed; grpc logs a servicer's CancelledError as an error, which tests
        # that look for logged errors would take for one of the client's.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve_beats(requests, context)

    async def _serve_beats(self, requests: AsyncIterator[Request], context: grpc.aio.ServicerContext) -> None:
        self.streams += 1
        await self._count(1)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for request in requests:
                task = asyncio.ensure_future(self.script(request, context))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await self._count(-1)

    async def _heartbeat(self, request: Request, context: grpc.aio.ServicerContext) -> Response:
        self.unary += 1
        return self.reply(request)

    async def start(self) -> str:
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "Heartbeat": grpc.unary_unary_rpc_method_handler(
                self._heartbeat, Request.FromString, Response.SerializeToString
            )
        }
        if self.beats:
            handlers["Beats"] = grpc.stream_stream_rpc_method_handler(
                self._beats, Request.FromString, Response.SerializeToString
            )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("peergrid.v1.Membership", handlers),)
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(None)


def _grpc_cancel(record: logging.LogRecord) -> bool:
    """grpc's own error log of a servicer coroutine cancelled in its wrapper (after our handler,
    which suppresses its CancelledError, returned): the scripted peer's stream ending as the
    client drops it, not anything the client under test logged."""
    return (
        record.name.startswith("grpc")
        and "Exception not handled by _handle_exceptions" in record.getMessage()
        and record.exc_info is not None
        and isinstance(record.exc_info[1], asyncio.CancelledError)
    )


#: Streams silent for 0.3 s are stale (two failure timeouts): a heartbeat that times out after
#: that retires its stream; one that times out sooner leaves it open.
QUICK = Timing(heartbeat_interval=0.05, failure_timeout=0.15)


async def with_client(
    peer: ScriptedPeer, body: Callable[[PeerClient, Peers], Awaitable[None]], timing: Timing = QUICK
) -> None:
    address = await peer.start()
    peers = Peers(GridConfig(cluster=CLUSTER, timing=timing), ME)
    try:
        await body(peers.get(address), peers)
    finally:
        await peers.close()
        await peer.stop()


def readers() -> list[asyncio.Task[Any]]:
    """Reader tasks of heartbeat streams still running in this loop."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "") == "BeatStream._read"
    ]


def test_heartbeats_of_a_cluster_go_over_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"unary": 0, "answered": 0, "streams": 0}
    unary, answer, beats = (
        server_module._Membership.Heartbeat,
        server_module._Membership._heartbeat,
        server_module._Membership.Beats,
    )

    async def counting_unary(self: Any, request: Any, context: Any) -> Any:
        counts["unary"] += 1
        return await unary(self, request, context)

    def counting_answer(self: Any, request: Any) -> Any:
        counts["answered"] += 1
        return answer(self, request)

    async def counting_beats(self: Any, requests: Any, context: Any) -> AsyncIterator[Any]:
        counts["streams"] += 1
        async for reply in beats(self, requests, context):
            yield reply

    monkeypatch.setattr(server_module._Membership, "Heartbeat", counting_unary)
    monkeypatch.setattr(server_module._Membership, "_heartbeat", counting_answer)
    monkeypatch.setattr(server_module._Membership, "Beats", counting_beats)
    with cluster(3):
        start = counts["answered"]
        wait_for(lambda: counts["answered"] > start + 30, message="30 more heartbeats answered")
    assert counts["unary"] == 0  # joins' call-backs and every heartbeat went over streams
    assert 0 < counts["streams"] < counts["answered"]  # a stream carries many heartbeats


def test_a_late_reply_is_never_taken_for_a_newer_heartbeat() -> None:
    # The peer holds its answer to heartbeat 1 past the caller's deadline, then sends it (with
    # heartbeat 1's seq) ahead of its answer to every later heartbeat, on whatever stream that
    # comes: each later heartbeat must get its own answer, never the late one.
    late: list[Request] = []

    async def script(request: Request, context: grpc.aio.ServicerContext) -> None:
        if request.list_version == 1:
            late.append(request)  # never answered on time
            return
        for old in late:
            await peer.write(context, peer.reply(old))
        await peer.write(context, peer.reply(request))

    peer = ScriptedPeer(script)

    async def body(client: PeerClient, peers: Peers) -> None:
        assert (await client.heartbeat(ME, 7, timeout=5)).list_version == 7
        with pytest.raises(PeerUnavailableError, match="did not answer a heartbeat within"):
            await client.heartbeat(ME, 1, timeout=0.5)  # nothing on the stream for 0.5 s: stale
        await peer.until(lambda: peer.open == 0, "the timed-out stream cancelled")
        for version in (2, 3, 4):
            assert (await client.heartbeat(ME, version, timeout=5)).list_version == version
        assert peer.streams == 2  # the first, retired by the timeout; then one new stream

    asyncio.run(with_client(peer, body))


def test_a_stream_a_busy_peer_accepts_late_is_kept() -> None:
    # An overloaded peer takes longer than a heartbeat's deadline to answer a new stream. The
    # heartbeats that time out meanwhile must not cancel it (each new stream would meet the same
    # fate, and the peer would never hear a heartbeat): it is kept until stale, and answers.
    release = asyncio.Event()
    peer = ScriptedPeer.held_until(release)

    async def body(client: PeerClient, peers: Peers) -> None:
        for version in (1, 2):
            with pytest.raises(PeerUnavailableError):
                await client.heartbeat(ME, version, timeout=0.05)
        release.set()
        assert (await client.heartbeat(ME, 3, timeout=5)).list_version == 3
        assert peer.streams == 1

    asyncio.run(with_client(peer, body, Timing()))  # stale after 10 s


def test_replies_out_of_order_each_reach_their_own_heartbeat() -> None:
    release = asyncio.Event()

    async def script(request: Request, context: grpc.aio.ServicerContext) -> None:
        if request.list_version == 1:
            await release.wait()
        await peer.write(context, peer.reply(request))

    peer = ScriptedPeer(script)

    async def body(client: PeerClient, peers: Peers) -> None:
        first = asyncio.ensure_future(client.heartbeat(ME, 1, timeout=10))
        second = await client.heartbeat(ME, 2, timeout=10)
        assert second.list_version == 2
        assert not first.done()
        release.set()
        assert (await first).list_version == 1
        assert peer.streams == 1

    asyncio.run(with_client(peer, body))


def test_a_timed_out_heartbeat_leaves_others_on_its_stream_their_own_deadline() -> None:
    # As separate calls would: a tick's heartbeat that times out does not fail a longer probe
    # sent on the same stream (its stream is retired, and cancelled once the probe is answered).
    release = asyncio.Event()
    peer = ScriptedPeer.held_until(release)

    async def body(client: PeerClient, peers: Peers) -> None:
        probe = asyncio.ensure_future(client.heartbeat(ME, 1, timeout=10))
        with pytest.raises(PeerUnavailableError):
            await client.heartbeat(ME, 2, timeout=0.5)
        release.set()
        assert (await probe).list_version == 1
        await peer.until(lambda: peer.open == 0, "the retired stream cancelled once idle")
        assert (await client.heartbeat(ME, 3, timeout=5)).list_version == 3

    asyncio.run(with_client(peer, body))


def test_dropping_a_peer_cancels_its_stream(caplog: pytest.LogCaptureFixture) -> None:
    peer = ScriptedPeer()

    async def body(client: PeerClient, peers: Peers) -> None:
        assert (await client.heartbeat(ME, 1, timeout=5)).list_version == 1
        assert peer.open == 1
        assert len(readers()) == 1
        await peers.drop(client.address)
        assert readers() == []  # no task left behind
        await peer.until(lambda: peer.open == 0, "the peer saw the stream end")
        with pytest.raises(PeerUnavailableError):
            await client.heartbeat(ME, 2, timeout=5)  # a client kept past its drop
        again = peers.get(client.address)
        assert (await again.heartbeat(ME, 3, timeout=5)).list_version == 3
        assert peer.streams == 2

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_client(peer, body))
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING and not _grpc_cancel(r)]
    assert not logged, caplog.text


def test_closing_peers_ends_a_heartbeat_waiting_on_its_stream() -> None:
    async def never(request: Request, context: grpc.aio.ServicerContext) -> None:
        await asyncio.Event().wait()

    peer = ScriptedPeer(never)

    async def body(client: PeerClient, peers: Peers) -> None:
        waiting = asyncio.ensure_future(client.heartbeat(ME, 1, timeout=30))
        await peer.until(lambda: peer.open == 1, "the stream open")
        await peers.close()
        with pytest.raises(PeerUnavailableError):
            await waiting
        assert readers() == []

    asyncio.run(with_client(peer, body))


def test_a_peer_without_beats_gets_unary_heartbeats() -> None:
    peer = ScriptedPeer(beats=False)  # a member of an earlier version: UNIMPLEMENTED

    async def body(client: PeerClient, peers: Peers) -> None:
        for version in (1, 2):
            assert (await client.heartbeat(ME, version, timeout=5)).list_version == version
        assert peer.unary == 2

    asyncio.run(with_client(peer, body))


def test_an_unreachable_peer_is_peer_unavailable() -> None:
    async def body() -> None:
        peers = Peers(GridConfig(cluster=CLUSTER), ME)
        try:
            with pytest.raises(PeerUnavailableError):
                await peers.get("127.0.0.1:1").heartbeat(ME, 1, timeout=5)
        finally:
            await peers.close()

    asyncio.run(body())


class Handlers:
    """A member's heartbeat handler, alone (the server's other handlers are not called)."""

    cluster = CLUSTER
    uuid = "peer-b"

    def __init__(self) -> None:
        self.heard: list[tuple[str, int]] = []

    def heartbeat(self, uuid: str, list_version: int, list_master: str = "") -> HeartbeatReply:
        self.heard.append((uuid, list_version))
        return HeartbeatReply(HeartbeatStatus.OK, list_version + 100, self.uuid)

    def current_members(self) -> MemberList:
        return MemberList(1, self.uuid, (Member(self.uuid, "127.0.0.1:1"),))


def test_a_refused_heartbeat_ends_its_stream_with_the_unary_status() -> None:
    async def body() -> None:
        handlers = Handlers()
        server = server_module.Server(GridConfig(cluster=CLUSTER), handlers)  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        address = f"127.0.0.1:{port}"
        peers = Peers(GridConfig(cluster=CLUSTER), ME)
        strangers = Peers(GridConfig(cluster="another"), ME)
        try:
            client = peers.get(address)
            assert (await client.heartbeat(ME, 1, timeout=5)).list_version == 101
            with pytest.raises(RemoteError, match=r"INVALID_ARGUMENT.*heartbeat uuid"):
                await client.heartbeat("not a uuid!", 2, timeout=5)
            assert (await client.heartbeat(ME, 3, timeout=5)).list_version == 103  # a new stream
            with pytest.raises(ClusterNameMismatchError, match="another"):
                await strangers.get(address).heartbeat(ME, 4, timeout=5)
            assert handlers.heard == [(ME, 1), (ME, 3)]
        finally:
            await strangers.close()
            await peers.close()
            await server.stop(None)

    asyncio.run(body())


def test_seqs_are_unique_for_the_life_of_a_client() -> None:
    # What makes a late reply harmless: no two heartbeats of one client share a seq, across
    # every stream it opens.
    seen: list[int] = []

    async def script(request: Request, context: grpc.aio.ServicerContext) -> None:
        seen.append(request.seq)
        if request.list_version % 2:
            return  # odd heartbeats time out: each retires its stream
        await peer.write(context, peer.reply(request))

    peer = ScriptedPeer(script)

    async def body(client: PeerClient, peers: Peers) -> None:
        for version in range(6):
            try:
                await client.heartbeat(ME, version, timeout=0.5 if version % 2 else 5)
            except PeerUnavailableError:
                assert version % 2
        assert len(seen) == len(set(seen)) == 6

    asyncio.run(with_client(peer, body))


class StuckCall:
    """A Beats call whose writes never complete, and whose stream ends when told to."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.end = asyncio.Event()

    async def write(self, request: Request) -> None:
        self.writing.set()
        await asyncio.Event().wait()

    async def read(self) -> object:
        await self.end.wait()
        return grpc.aio.EOF

    def cancel(self) -> None:
        self.end.set()


def test_a_stream_that_ends_under_a_stuck_write_leaves_no_error_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The stream ends while a heartbeat is still writing; the heartbeat then times out in its
    # write: the error the reader gave it must count as retrieved (asyncio logs it otherwise).
    async def body() -> None:
        call, readers_seen = StuckCall(), set()
        beats = BeatStream("127.0.0.1:1", call, readers_seen.add)
        asking = asyncio.ensure_future(beats.ask(Request(seq=1), 0.3))
        await call.writing.wait()
        call.end.set()
        with pytest.raises(PeerUnavailableError):
            await asking
        await asyncio.gather(*readers_seen)
        assert beats.retired
        del asking, beats
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(body())
    assert "never retrieved" not in caplog.text


class WitnessHandlers(Handlers):
    """Answers as a member that last heard its master ``list_version`` tenths of a second ago
    (list version 0: never)."""

    def heartbeat(self, uuid: str, list_version: int, list_master: str = "") -> HeartbeatReply:
        heard = None if list_version == 0 else list_version / 10
        return HeartbeatReply(HeartbeatStatus.OK, list_version, self.uuid, master_heard=heard)


def test_a_heartbeat_reply_says_when_the_peer_last_heard_its_master() -> None:
    # What a member about to take over asks younger members (an indirect probe of the master):
    # unset travels as None, not as 0 ("heard it just now" would block every take-over).
    async def body() -> None:
        server = server_module.Server(GridConfig(cluster=CLUSTER), WitnessHandlers())  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        peers = Peers(GridConfig(cluster=CLUSTER), ME)
        try:
            client = peers.get(f"127.0.0.1:{port}")
            assert (await client.heartbeat(ME, 0, timeout=5)).master_heard is None
            assert (await client.heartbeat(ME, 25, timeout=5)).master_heard == 2.5
        finally:
            await peers.close()
            await server.stop(None)

    asyncio.run(body())


def test_a_reply_that_comes_after_its_heartbeat_gave_up_says_the_peer_runs() -> None:
    # An overloaded peer answers seconds late: the heartbeat fails at its deadline, but the late
    # reply marks the client ``answered_at``, which membership takes as evidence that the peer
    # runs (slowly), so that a backlogged master is not replaced, nor a starved member removed.
    release = asyncio.Event()
    peer = ScriptedPeer.held_until(release)

    async def body(client: PeerClient, peers: Peers) -> None:
        seen = asyncio.Event()
        answered = client._answered

        def note() -> None:
            answered()
            seen.set()

        client._answered = note  # type: ignore[method-assign]  # (before the stream opens)
        sent = time.monotonic()
        with pytest.raises(PeerUnavailableError):
            await client.heartbeat(ME, 1, timeout=0.1)
        assert client.answered_at < sent  # nothing came yet
        release.set()
        await asyncio.wait_for(seen.wait(), 10)
        assert client.answered_at > sent

    asyncio.run(with_client(peer, body, Timing()))  # stale after 10 s: the stream stays open
