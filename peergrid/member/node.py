"""One member: every service built and wired in dependency order, started and stopped.

``Grid`` and ``AsyncGrid`` are thin façades over a ``Node``. The node owns the
loop thread; everything but owner-local reads runs there.

Start: loop thread -> transport server (bind) -> membership (join or form) ->
heartbeats -> background upkeep. Shutdown runs in reverse, after handing this
member's partitions over (a graceful leave).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import time
import uuid as uuid_module
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, ClassVar

from peergrid.cluster.discovery import Discovery
from peergrid.cluster.membership import Membership
from peergrid.cluster.merge import Merger
from peergrid.config import GridConfig, parse_address
from peergrid.errors import GridClosedError, JoinError, PeerGridError
from peergrid.events.publisher import EventPublisher
from peergrid.events.subscriptions import Subscriptions
from peergrid.invocation.invoker import Invoker
from peergrid.invocation.pipe import Pipe, Pipes
from peergrid.member import metrics
from peergrid.member.answers import Answers, cluster_safe
from peergrid.member.leaving import hand_over_and_leave
from peergrid.member.loop import every, runtime
from peergrid.member.maps import Maps
from peergrid.member.merging import Merging
from peergrid.owner.side import MemberView
from peergrid.owner.side import build as owner_side
from peergrid.protocol import Member, MemberList, Op, Result, reply_of
from peergrid.replication import PartitionManager
from peergrid.serialization import serializer_named
from peergrid.stats import MapCounters, counters_in
from peergrid.storage import journal
from peergrid.storage.registry import MapRegistry
from peergrid.transport import PeerClient, Peers, Server

log = logging.getLogger("peergrid")


class Node:
    """A member of a peergrid cluster (internal; use ``peergrid.Grid``)."""

    #: Every node made in this process, while referenced (tests check none is left running).
    instances: ClassVar[weakref.WeakSet[Node]] = weakref.WeakSet()

    def __init__(self, config: GridConfig) -> None:
        Node.instances.add(self)
        self.config = config
        self.cluster = config.cluster
        self.uuid = uuid_module.uuid4().hex
        self.serializer = serializer_named(config.serializer)
        self._thread = runtime()
        self.loop = self._thread.loop
        self.address = ""
        self.closed = False
        # What ensure_open says once closed (the fork hook in loop.py says "created before fork").
        self.closed_reason = "this grid was shut down; create a new peergrid.Grid to continue"
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()  # everything this member spawned: cancelled on stop
        self._peers: Peers | None = None
        self.membership: Membership
        self.discovery = Discovery(config, self.uuid)
        self._merger: Merger | None = None
        self.registry = MapRegistry(config.maps)
        self.journal = journal.Window(config.timing.merge_horizon)  # writes journaled for a merge
        # Whose increments this member applies, in counters' journals: new at every (re-)join, so
        # what it added on one side of a split and, re-joined, on the other, are never confused.
        self.contributor = uuid_module.uuid4().hex
        self.counters: dict[str, MapCounters] = {}
        self.counters_of = functools.partial(counters_in, self.counters)
        self.manager = PartitionManager(config, self, self.registry.policy, self._served_changed)
        # (Lambdas: the membership is made in _start, once the member is bound.)
        version = lambda: self.membership.members.version  # noqa: E731
        lease = lambda: self.membership.holds_lease()  # noqa: E731, PLW0108
        self.publisher = EventPublisher(
            config.partition_count,
            self._serving,
            version,
            config.limits,
            lease,
            batch_interval=config.timing.event_batch_interval,
        )
        member = MemberView(self.current_members, self.has_quorum, lease, lambda: self.contributor)
        side = owner_side(
            config,
            self.registry,
            self.manager,
            self.publisher,
            self.serializer,
            self.counters_of,
            self.journal,
            member,
        )
        self.owner, self.stores, self.processors = side.writes, side.stores, side.processors
        self.executor, self.compute = side.executor, side.compute
        self.pipes = Pipes(
            self.loop,
            lambda uuid: self.membership.address_of(uuid),  # noqa: PLW0108 - membership is made in _start
            lambda address: self.peer(address).open_stream(),
            lambda: (self.membership.members.version, self.uuid),
            lambda version, address: self.membership.saw_version(version, address),  # noqa: PLW0108 - as above
            (
                config.limits.frame_ops,
                config.limits.max_inflight_frames,
                config.timing.operation_timeout + config.timing.rpc_timeout,
                config.limits.max_message_bytes,
            ),
            lambda: self.closed,
        )
        self.executor.take_reply = self._take_reply
        self.invoker = Invoker(self, config.timing.retry_initial, config.timing.retry_max)
        self.merging = Merging(
            config, self.manager, self.invoker, lambda: self.membership, self.replica_peer, self._rejoin
        )
        self.subscriptions = Subscriptions(
            self.uuid,
            self.replica_peer,
            self.spawn,
            config.timing.heartbeat_interval,
            owned_by=lambda owner: self.manager.table.owned_by(owner),  # noqa: PLW0108 - the table is replaced
            min_heartbeat=config.limits.min_heartbeat_interval,
        )
        self.maps = Maps(
            self.uuid,
            self.registry,
            self.manager,
            self.owner,
            self.stores,
            self.publisher,
            self.subscriptions,
            self.serializer,
            self.counters,
            config.timing,
        )
        self.manager.copy_changed = self.maps.copy_changed
        self.answers = Answers(
            self.cluster,
            self.uuid,
            lambda: self.membership,
            lambda: self._merger,
            self.merging,
            self.manager,
            self.executor,
            self.publisher,
            self.maps,
        )
        self._server = Server(config, self.answers)
        self._metrics = metrics.Endpoints(self._metrics_snapshot)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bind, join (or form) the cluster, start heartbeats; blocks until done."""
        timing = self.config.timing
        # Joining ends by itself (admitted, alone, or JoinError) within join_max_wait; this
        # bound only keeps a hang elsewhere (binding, discovery) from blocking for ever.
        budget = timing.join_timeout + timing.join_max_wait + timing.rpc_timeout * 4 + 10
        try:
            self._thread.run(self._start(), timeout=budget)
        except BaseException as exc:
            self.closed = True
            with contextlib.suppress(Exception):
                self._thread.run(self._stop(), timeout=5)
            if isinstance(exc, TimeoutError):
                raise JoinError(
                    f"member did not finish starting within {budget:.0f}s (joining cluster "
                    f"{self.config.cluster!r} through {', '.join(self.config.members) or 'discovery'})"
                ) from exc
            raise
        self._started = True
        if self.config.metrics_port is not None:
            self.serve_metrics(self.config.metrics_port, "127.0.0.1")

    async def _start(self) -> None:
        host, port = parse_address(self.config.bind, what="bind")
        self._peers = Peers(self.config, self.uuid)
        bound = await self._server.start(host, port)
        self.address = f"{host}:{bound}"
        await self.discovery.start(host, bound)
        me = Member(self.uuid, self.address, float(self.config.weight))
        self.membership = Membership(
            self.config,
            me,
            self.peer,
            self._members_changed,
            self._removed,
            lambda: self.merging.seeds or self.config.members,  # merging: the other instance's
            self._forget_peer,
            self._hints if self.discovery.enabled else None,
            self._removed,
        )
        self._merger = Merger(
            self.config, self.membership, self.peer, self._merge_candidates, self.merging.into, self._settled
        )
        await self.membership.join()
        self.membership.start_heartbeats()
        for name, map_config in self.config.maps.items():
            self.maps.configure(name, map_config)  # near caches of configured maps start now
        self.spawn(every(self.config.timing.discovery_interval, self._merger.check))
        self.spawn(every(self.config.timing.expiry_sweep_interval, self._sweep))
        self.spawn(every(self.config.timing.anti_entropy_interval, self.manager.anti_entropy))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine as this member's task (loop thread); cancelled when the member stops."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _hints(self) -> Iterable[str]:
        return [] if self.merging.seeds else self.discovery.addresses()

    def _merge_candidates(self) -> Iterable[str]:
        return [*self.discovery.addresses(), *self.config.members]

    async def _settled(self) -> bool:
        return await self.cluster_safe(0, merging=True)

    async def cluster_safe(self, timeout: float, merging: bool = False) -> bool:
        """True once every member is safe at one list version (see ``answers.cluster_safe``)."""
        members = self.current_members
        return await cluster_safe(self.answers, members, self.peer, self.config.timing, timeout, merging)

    async def _sweep(self) -> None:
        self.manager.prune_journals(self.journal.oldest(), self.config.limits.max_journal_entries)
        await self.owner.sweep()  # in slices: yields to the loop
        self.owner.touches()
        await self.stores.flush_due()

    def shutdown(self, graceful: bool = True) -> None:
        """Leave the cluster (handing partitions over when ``graceful``) and stop. Safe twice."""
        if self.closed:
            return
        self.closed = True
        self._metrics.stop()
        if not self._started:
            return
        timeout = self.config.timing.shutdown_timeout + self.config.timing.rpc_timeout * 4 + 5
        try:
            if graceful:
                self._thread.run(self._leave(), timeout=timeout)
        except (PeerGridError, TimeoutError, concurrent.futures.CancelledError) as exc:
            log.warning(
                "member %s: graceful leave did not complete (%s); stopping anyway",
                self.address,
                exc,
            )
        finally:
            with contextlib.suppress(Exception):
                self._thread.run(self._stop(), timeout=10)

    def kill(self) -> None:
        """Stop at once, as if the process died: no hand-over, no goodbye (for tests)."""
        if self.closed:
            return
        self.closed = True
        self._metrics.stop()
        with contextlib.suppress(Exception):
            self._thread.run(self._stop(grace=None), timeout=10)

    async def _leave(self) -> None:
        await self.discovery.close()  # no longer a member to find
        await hand_over_and_leave(self.membership, self.manager, self.config.timing)

    async def _stop(self, grace: float | None = 0.2) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._merger is not None:
            await self._merger.stop()
        await self.discovery.close()
        if hasattr(self, "membership"):
            await self.membership.stop()
        await self.subscriptions.stop()
        await self.manager.stop()
        self.maps.dispatcher.stop()
        self.stores.stop()
        self.pipes.drop()
        await self._server.stop(grace)
        if self._peers is not None:
            await self._peers.close()

    def serve_metrics(self, port: int, host: str) -> int:
        """Start this member's Prometheus endpoint (see ``peergrid.member.metrics``)."""
        self.ensure_open()
        return self._metrics.serve(port, host)

    def _metrics_snapshot(self) -> metrics.Snapshot | None:
        """What a scrape reads (on the scraper's thread: the figures come from the loop)."""
        return None if self.closed else self.run(self.maps.snapshot(self.address, len(self.members())), 10)

    def ensure_open(self) -> None:
        """Raise ``GridClosedError`` after shutdown."""
        if self.closed:
            raise GridClosedError(self.closed_reason)

    # ------------------------------------------------------------------ wiring
    def peer(self, address: str) -> PeerClient:
        """The client for a peer address (loop thread)."""
        assert self._peers is not None
        return self._peers.get(address)

    def _forget_peer(self, address: str) -> None:
        if self._peers is not None:
            self.spawn(self._peers.drop(address))

    def replica_peer(self, uuid: str) -> PeerClient | None:
        """The client for member ``uuid`` (loop thread)."""
        address = self.membership.address_of(uuid)
        return self.peer(address) if address else None

    def current_members(self) -> MemberList:
        """The adopted member list."""
        return self.membership.members

    def members(self) -> list[Member]:
        """The members in force, oldest first."""
        return list(self.membership.members.members)

    def owner_of(self, partition: int) -> Member | None:
        """The member that owns ``partition`` now, or None while nobody does."""
        owner = self.manager.table.owner(partition)
        return self.membership.members.find(owner) if owner else None

    async def adopt_members(self, members: MemberList) -> None:
        """Adopt a newer list a peer sent along with a request, once confirmed
        (``ClusterError`` when it cannot be)."""
        await self.membership.adopt_from_peer(members)

    def has_quorum(self) -> bool:
        """True unless ``min_cluster_size`` is set and this member sees fewer members, or has
        not heard enough of them for a failure timeout (``Membership.has_quorum``)."""
        return self.membership.has_quorum()

    def holds_lease(self) -> bool:
        """True while this member may serve its partitions (its owner lease lies ahead)."""
        return self.membership.holds_lease()

    def _take_reply(self, sender: str, op: Op) -> bool:
        """Hand the result that came with our backup copy of a write to the call of ours that
        sent it (``protocol.with_reply``); whether the call took it.

        Only while our own view agrees that the copy vouches for the write, as the owner's ack
        would: our table names ``sender`` the owner and us a sync backup of the partition (else
        the owner may need another copy before the write is safe: it answers itself), and we
        hold our lease (the master has not removed us: it waits that out first).
        """
        pipe = self.pipes.call_pipe(sender)
        if pipe is None or not self.membership.holds_lease():
            return False
        replicas = self.manager.table.replicas[op.partition]
        sync = replicas[1 : 1 + self.config.backup_count]
        if not replicas or replicas[0] != sender or self.uuid not in sync:
            return False
        try:
            reply = reply_of(op)
        except ValueError as exc:
            log.warning("member %s sent a malformed reply with a backup: %s", sender, exc)
            return False
        if reply is None:
            return False
        frame_id, index, result, lease_left = reply
        return pipe.forwarded(frame_id, index, op.partition, result, lease_left)

    def lease_left(self) -> float:
        """Seconds this member's owner lease has left (0 when it holds none)."""
        return self.membership.lease_left()

    def backup_missed(self, p: int, uuid: str) -> None:
        """Backup ``uuid`` did not take a write of ``p`` its near caches were not sent an
        event of: they must hear of a gap (``EventPublisher.missed``)."""
        self.publisher.missed(p, uuid)

    def saw_version(self, version: int, uuid: str) -> None:
        """Member ``uuid`` runs list ``version``: pull it if it is newer than ours."""
        self.membership.saw_version(version, self.membership.address_of(uuid))

    def vouch_lapse(self, members: MemberList) -> float:
        """Seconds until our answers renew no lease of a member missing from ``members``."""
        return self.membership.vouch_lapse(members)

    def _members_changed(self, old: MemberList, new: MemberList) -> None:
        if old.version == 0 and new.members == (self.membership.me,):
            self.manager.form()
        gone = set(old.uuids) - set(new.uuids)
        if any(not m.leaving for m in old.members if m.uuid in gone) and self.journal.open():
            # A member went without leaving: from where we stand, maybe a split. Journal writes
            # for a merge, those applied but not yet acknowledged too (they may be, on our side).
            log.info("member %s journals its writes for a merge after a split", self.address)
            self.manager.journal_pending(self.journal.clock)
        elif new.lost_at and new.lost_at != old.lost_at and self.journal.open(since=new.lost_at):
            # The list lost a member we did not see go (we joined since): the others journal,
            # and so must we, or a merge would overwrite what we wrote as older than its changes.
            log.info(
                "member %s journals its writes for a merge: its cluster lost a member %.1fs ago",
                self.address,
                time.time() - new.lost_at,
            )
        for uuid in gone:
            self.pipes.drop(uuid)
            self.publisher.drop_peer(uuid)  # its event streams here, should it still hold any
            member = old.find(uuid)
            if member is not None and self._peers is not None:
                self.spawn(self._peers.drop(member.address))
        self.manager.on_members(new)
        self.subscriptions.on_members(new)
        self.maps.on_table()
        self.compute.members_changed()  # locks of members that left are released

    def _removed(self) -> None:
        # Declared dead while it could not answer (paused, cut off), or orphaned (its master went
        # to another instance): it served nothing since its lease ran out, and joins again as a
        # new member, bringing what it served (partitions the others lost while it was away come
        # back; nothing else: it journaled nothing).
        self.spawn(self.merging.into(None))

    async def _rejoin(self) -> None:
        self.contributor = uuid_module.uuid4().hex
        self.manager.reset()
        self.pipes.drop()
        self.membership.reset_for_rejoin()
        try:
            await self.membership.join()
        except PeerGridError:
            log.exception("member %s could not rejoin", self.address)

    def add_partition_lost_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(partition)`` (on the member's thread) when a partition loses every copy."""
        self.manager.lost_listeners.append(listener)

    # ------------------------------------------------------------------ routing
    def pipe_for(self, partition: int) -> Pipe | None:
        """The pipe to ``partition``'s owner, or None when this member should run it."""
        owner = self.manager.table.owner(partition)
        return None if owner is None or owner == self.uuid else self.pipes.calls(owner)

    def pipes_for(self, partitions: Sequence[int]) -> list[Pipe | None]:
        """``pipe_for`` of each partition, in one pass: the table read once, each owner's pipe
        looked up once (a get_all's or put_all's keys)."""
        replicas, me = self.manager.table.replicas, self.uuid
        by_owner: dict[str, Pipe | None] = {}
        pipes: list[Pipe | None] = []
        for partition in partitions:
            owners = replicas[partition]
            owner = owners[0] if owners else None
            if owner is None or owner == me:
                pipes.append(None)
                continue
            if owner not in by_owner:
                by_owner[owner] = self.pipes.calls(owner)
            pipes.append(by_owner[owner])
        return pipes

    def pipe_to(self, uuid: str) -> Pipe | None:
        """The pipe for backup writes to member ``uuid`` (any thread)."""
        return self.pipes.backups(uuid)

    def execute_local(self, op: Op) -> Result | asyncio.Future[Result]:
        """Run an op on this member as its would-be owner (loop thread)."""
        return self.executor.execute(op, self.membership.members.version)

    # ------------------------------------------------------------------ maps
    def _serving(self) -> list[int]:
        readable = self.manager.readable
        return [p for p in self.manager.table.owned_by(self.uuid) if readable[p] is not None]

    def _served_changed(self) -> None:
        self.owner.usage_dirty = True
        self.compute.members_changed()  # a partition served anew may hold departed members' locks

    # ------------------------------------------------------------------ sync helpers
    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the member's loop from another thread."""
        self.ensure_open()
        return self._thread.run(coro, timeout)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn`` on the member's loop."""
        self._thread.call_soon(fn, *args)
