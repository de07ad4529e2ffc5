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
import logging
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, ClassVar

from peergrid import metrics
from peergrid._loop import runtime
from peergrid.cluster.discovery import Discovery
from peergrid.cluster.membership import Membership, State
from peergrid.cluster.merge import Merger
from peergrid.config import GridConfig, MapConfig, is_loopback, parse_address
from peergrid.errors import GridClosedError, PeerGridError
from peergrid.events.listeners import Dispatcher, ListenerHub
from peergrid.events.model import EventBatch
from peergrid.events.publisher import EventPublisher
from peergrid.events.subscriptions import Subscriptions
from peergrid.invocation.compute import ComputeOps, WritePath
from peergrid.invocation.executor import Executor
from peergrid.invocation.invoker import Invoker
from peergrid.invocation.merging import Merged, merge_back
from peergrid.invocation.owner import OwnerWrites
from peergrid.invocation.pipe import Pipe
from peergrid.invocation.stores import StoreOps
from peergrid.nearcache import NearCache
from peergrid.processors import ProcessorRegistry
from peergrid.protocol import Chunk, Copy, HeartbeatReply, JoinReply, Member, MemberList, Op, Result, Status
from peergrid.replication import PartitionManager
from peergrid.serialization import serializer_named
from peergrid.stats import LocalMapStats, MapCounters
from peergrid.storage import Partition, journal
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
        self._started = False
        self._pipes: dict[str, Pipe] = {}  # to each peer, for calls
        self._backup_pipes: dict[str, Pipe] = {}  # to each peer, for backup writes
        self._pipes_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()  # everything this member spawned: cancelled on stop
        self._lost_listeners: list[Callable[[int], None]] = []
        self._peers: Peers | None = None
        self._server = Server(config, self)
        self.membership: Membership
        self.discovery = Discovery(config, self.uuid)
        self._merger: Merger | None = None
        self._merge_seeds: list[str] = []  # while merging: the surviving instance's members
        self._rewriting = False  # a merge's data is being re-written into the surviving instance
        self._merge_again = False  # told to merge again while merging: one more round
        self.registry = MapRegistry(config.maps)
        self.journal = journal.Window(config.timing.merge_horizon)  # writes journaled for a merge
        # Whose increments this member applies, in counters' journals: new at every (re-)join, so
        # what it added on one side of a split and, re-joined, on the other, are never confused.
        self.contributor = uuid_module.uuid4().hex
        self.counters: dict[str, MapCounters] = {}
        self.manager = PartitionManager(
            config, self, self._partition_lost, self.registry.policy, self._served_changed
        )
        self.publisher = EventPublisher(
            config.partition_count, self._serving, self._table_version, config.limits, self._has_lease
        )
        self.owner = OwnerWrites(self.registry, self.manager, self.publisher, self.counters_of)
        self.stores = StoreOps(
            self.registry,
            self.manager,
            self.owner,
            self.serializer,
            self.counters_of,
            config.limits.store_threads,
        )
        self.processors = ProcessorRegistry()

        def compute_ops(writes: WritePath) -> ComputeOps:
            return ComputeOps(
                writes,
                self.stores,
                self.processors,
                self.serializer,
                self.registry,
                self.manager,
                self.owner,
                self.current_members,
                config.limits.max_value_bytes,
                lambda: self.contributor,
            )

        self.executor: Executor = Executor(
            config,
            self.manager,
            self._table_version,
            self.has_quorum,
            self._has_lease,
            self._values_equal,
            self.registry,
            self.publisher,
            self.owner,
            self.stores,
            self.journal,
            compute_ops,
        )
        self.compute: ComputeOps = self.executor.compute  # type: ignore[assignment]  # made by compute_ops
        self.invoker = Invoker(self, config.timing.retry_initial, config.timing.retry_max)
        self.subscriptions = Subscriptions(
            self.uuid,
            self.replica_peer,
            self.spawn,
            config.timing.heartbeat_interval,
            owned_by=lambda owner: self.manager.table.owned_by(owner),  # noqa: PLW0108 - the table is replaced
            min_heartbeat=config.limits.min_heartbeat_interval,
        )
        self.dispatcher = Dispatcher(f"peergrid-events-{self.uuid[:8]}")
        self.near_caches: dict[str, NearCache] = {}
        self._metrics_servers: list[Any] = []
        self.hubs: dict[str, ListenerHub] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bind, join (or form) the cluster, start heartbeats; blocks until done."""
        budget = self.config.timing.join_timeout + self.config.timing.rpc_timeout * 4 + 10
        try:
            self._thread.run(self._start(), timeout=budget)
        except BaseException:
            self.closed = True
            with contextlib.suppress(Exception):
                self._thread.run(self._stop(), timeout=5)
            raise
        self._started = True
        if self.config.metrics_port is not None:
            self.serve_metrics(self.config.metrics_port, "127.0.0.1")

    async def _start(self) -> None:
        host, port = parse_address(self.config.bind, what="bind")
        self._peers = Peers(self.config, self.uuid)
        bound = await self._server.start(host, port)
        self.address = f"{host}:{bound}"
        if self.config.tls is None and not is_loopback(host):
            log.warning(
                "member %s serves without TLS on a non-loopback address: anyone who can reach this "
                "port can read and write every map, and join or disrupt the cluster; configure "
                "tls=peergrid.TLSConfig(...) (docs/operations.md, 'Security'), or bind 127.0.0.1",
                self.address,
            )
        await self.discovery.start(host, bound)
        me = Member(self.uuid, self.address, float(self.config.weight))
        self.membership = Membership(
            self.config,
            me,
            self._peer,
            self._members_changed,
            self._removed,
            self._seeds,
            self._forget_peer,
            self._hints if self.discovery.enabled else None,
            self._orphaned,
        )
        self._merger = Merger(
            self.config, self.membership, self._peer, self._merge_candidates, self._merge_into, self._settled
        )
        await self.membership.join()
        self.membership.start_heartbeats()
        for name, map_config in self.config.maps.items():
            self.configure_map(name, map_config)  # near caches of configured maps start now
        self.spawn(self._every(self.config.timing.discovery_interval, self._merger.check))
        self.spawn(self._every(self.config.timing.expiry_sweep_interval, self._sweep))
        self.spawn(self._every(self.config.timing.anti_entropy_interval, self.manager.anti_entropy))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine as this member's task (loop thread); cancelled when the member stops."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _seeds(self) -> Iterable[str]:
        return self._merge_seeds or self.config.members

    def _hints(self) -> Iterable[str]:
        return [] if self._merge_seeds else self.discovery.addresses()

    def _merge_candidates(self) -> Iterable[str]:
        return [*self.discovery.addresses(), *self.config.members]

    async def _settled(self) -> bool:
        return await self.cluster_safe(0, merging=True)

    async def cluster_safe(self, timeout: float, merging: bool = False) -> bool:
        """Poll every member's safe state until all are safe at one list version (``merging``:
        the merge asks, and another instance of the cluster answering does not count)."""
        deadline = time.monotonic() + timeout
        interval = self.config.timing.safe_poll_interval
        while True:
            if await self._all_safe(merging):
                return True
            if time.monotonic() + interval > deadline:
                return False
            await asyncio.sleep(interval)

    async def _all_safe(self, merging: bool) -> bool:
        safe, version, _ = self.safe_state(merging)
        if not safe:
            return False
        others = [m for m in self.membership.members.members if m.uuid != self.uuid]

        async def ask(address: str) -> tuple[bool, int, str]:
            try:
                return await self.replica_client(address).safe_state()
            except PeerGridError as exc:
                return False, 0, str(exc)

        states = await asyncio.gather(*(ask(m.address) for m in others))
        return all(ok and v == version for ok, v, _ in states) and self.membership.members.version == version

    def _orphaned(self) -> None:
        self.spawn(self._merge_into(None))

    async def _merge_into(self, into: MemberList | None) -> None:
        """Leave this instance of the cluster for ``into``'s (None: wherever the seeds and
        discovery lead), then bring back the partitions this member served here
        (``invocation/merging.py``: whole where the other instance lost them, else the changes
        made while split, by each map's merge policy).

        Told again while at it (the instance it joined merged on into a third, or dropped it),
        it finishes nothing in the instance that went away: it joins again and brings what it
        has not yet merged, with what it served meanwhile."""
        if self._rewriting:
            self._merge_again = True  # already on its way: once more when this round ends
            return
        # Each batch of copies with the lineage of the instance they were served in.
        batches = [(self.manager.owned_copies(), self.membership.members.origin)]
        self._rewriting = True  # not safe until the data is back
        try:
            while batches:
                self._merge_again = False
                batches = await self._merge_round(into, batches)
                into = None
        finally:
            self._rewriting = False
            self._merge_again = False

    async def _merge_round(
        self, into: MemberList | None, batches: list[tuple[list[Partition], str]]
    ) -> list[tuple[list[Partition], str]]:
        """Join ``into``'s instance and merge ``batches`` into it; what is left to merge in the
        next instance if this one went away meanwhile (``_merge_again``)."""
        self._merge_seeds = [m.address for m in into.members] if into is not None else []
        try:
            await self._rejoin()
        finally:
            self._merge_seeds = []
        if self.membership.state is State.JOINING:
            log.error(
                "member %s could not join the other instance of cluster %r; serving its data alone",
                self.address,
                self.cluster,
            )
            self.membership.form()
        joined = self.membership.members.origin
        limits, timing = self.config.limits, self.config.timing
        done, left = Merged(), []
        for copies, origin in batches:
            outcome = await merge_back(
                copies,
                joined == origin,
                self._restore,
                self.invoker,
                (limits.max_batch_ops, limits.max_message_bytes // 4),
                timing.operation_timeout,
                timing.retry_max,
                lambda: self._merge_again,
            )
            done.restored += outcome.restored
            done.changes += outcome.changes
            done.won += outcome.won
            done.failed += outcome.failed
            if outcome.left:
                left.append((outcome.left, origin))
        if self._merge_again:
            # The instance went away under us: what we served in it goes on too.
            served = self.manager.owned_copies()
            log.warning(
                "member %s: the instance of cluster %r it merged into went away meanwhile; "
                "joining again with %d partitions still to merge and %d served meanwhile",
                self.address,
                self.cluster,
                sum(len(copies) for copies, _ in left),
                len(served),
            )
            return [*left, (served, joined)]  # never empty: the loop joins again
        log.log(
            logging.WARNING if done.failed else logging.INFO,
            "member %s joined cluster %r again (%d members): of the %d partitions it served, %d "
            "came back whole (the cluster had lost them); of the %d changes it brought (made while "
            "split, or every entry when the instances formed apart), %d written, %d kept the value "
            "the cluster had (merge policy); %d failed",
            self.address,
            self.cluster,
            len(self.membership.members.members),
            sum(len(copies) for copies, _ in batches),
            done.restored,
            done.changes,
            done.won,
            done.changes - done.won,
            done.failed,
        )
        return []

    async def _restore(self, copy: Partition) -> str:
        """Offer a merged copy to its owner here (``PartitionManager.restore``)."""
        owner = self.manager.table.owner(copy.id)
        if owner == self.uuid:
            return self.manager.restore(copy)
        peer = self.replica_peer(owner) if owner is not None else None
        if peer is None:
            return "moved"
        chunks = self.manager.chunks(copy, restore=True)
        return await peer.install(chunks, timeout=self.config.timing.rpc_timeout * 10)

    async def _every(self, interval: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                outcome = job()
                if asyncio.iscoroutine(outcome):
                    await outcome
            except asyncio.CancelledError:
                raise
            except PeerGridError as exc:
                log.debug("background job failed: %s", exc)
            except Exception:
                log.exception("background job failed")

    async def _sweep(self) -> None:
        self.manager.prune_journals(self.journal.oldest(), self.config.limits.max_journal_entries)
        self.owner.sweep()
        self.owner.touches()
        await self.stores.flush_due()

    def shutdown(self, graceful: bool = True) -> None:
        """Leave the cluster (handing partitions over when ``graceful``) and stop. Safe twice."""
        if self.closed:
            return
        self.closed = True
        self._stop_metrics()
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

    def _stop_metrics(self) -> None:
        for server in self._metrics_servers:
            server.shutdown()
            server.server_close()
        self._metrics_servers.clear()

    def kill(self) -> None:
        """Stop at once, as if the process died: no hand-over, no goodbye (for tests)."""
        if self.closed:
            return
        self.closed = True
        self._stop_metrics()
        with contextlib.suppress(Exception):
            self._thread.run(self._stop(grace=None), timeout=10)

    async def _leave(self) -> None:
        await self.discovery.close()  # no longer a member to find
        others = [m for m in self.membership.members.members if m.uuid != self.uuid]
        if not others or self.membership.state is not State.ACTIVE:
            return
        deadline = time.monotonic() + self.config.timing.shutdown_timeout
        await self.membership.request_leave(final=False)
        poll = self.config.timing.safe_poll_interval * 5
        next_check = time.monotonic() + self.config.timing.rpc_timeout
        while time.monotonic() < deadline and not self.manager.holds_nothing():
            if self._everyone_leaving():
                log.info("member %s: every other member is leaving too; no one to hand over to", self.address)
                break
            await asyncio.sleep(poll)
            if time.monotonic() >= next_check:
                # Owners release our copies once moved; ask them ourselves if a release went missing.
                next_check = time.monotonic() + self.config.timing.rpc_timeout
                await self.manager.check_leftovers()
        if not self.manager.holds_nothing() and not self._everyone_leaving():
            log.warning(
                "member %s: partitions were not all handed over within %.1fs",
                self.address,
                self.config.timing.shutdown_timeout,
            )
        await self.membership.request_leave(final=True)

    def _everyone_leaving(self) -> bool:
        """True when no other member stays to take partitions over (the cluster is shutting down)."""
        return all(m.leaving for m in self.membership.members.members if m.uuid != self.uuid)

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
        self.dispatcher.stop()
        self.stores.stop()
        for pipe in self._drop_pipes():
            pipe.close()
        await self._server.stop(grace)
        if self._peers is not None:
            await self._peers.close()

    def serve_metrics(self, port: int, host: str) -> int:
        """Start this member's Prometheus endpoint (see ``peergrid.metrics``)."""
        self.ensure_open()
        server, bound = metrics.serve(self._metrics_snapshot, port, host)
        self._metrics_servers.append(server)
        return bound

    def _metrics_snapshot(self) -> metrics.Snapshot | None:
        """What a scrape reads (on the scraper's thread: the maps' figures come from the loop)."""
        if self.closed:
            return None

        async def all_stats() -> dict[str, LocalMapStats]:
            names = set(self.counters) | set(self.near_caches)
            for part in self.manager.parts:
                if part is not None:
                    names.update(part.maps)
            return {name: self.local_stats(name) for name in sorted(names)}

        maps = self.run(all_stats(), timeout=10)
        owned = len(self.manager.table.owned_by(self.uuid))
        return metrics.Snapshot(self.address, len(self.membership.members.members), owned, maps)

    def ensure_open(self) -> None:
        """Raise ``GridClosedError`` after shutdown."""
        if self.closed:
            raise GridClosedError("this grid was shut down; create a new peergrid.Grid to continue")

    # ------------------------------------------------------------------ wiring
    def _peer(self, address: str) -> PeerClient:
        assert self._peers is not None
        return self._peers.get(address)

    def _forget_peer(self, address: str) -> None:
        if self._peers is not None:
            self.spawn(self._peers.drop(address))

    def replica_client(self, address: str) -> PeerClient:
        """The client for a peer address (loop thread)."""
        return self._peer(address)

    def replica_peer(self, uuid: str) -> PeerClient | None:
        """The client for member ``uuid`` (loop thread)."""
        address = self.membership.address_of(uuid)
        return self._peer(address) if address else None

    def current_members(self) -> MemberList:
        """The adopted member list."""
        return self.membership.members

    async def adopt_members(self, members: MemberList) -> None:
        """Adopt a newer list a peer sent along with a request, once confirmed
        (``ClusterError`` when it cannot be)."""
        await self.membership.adopt_from_peer(members)

    def _table_version(self) -> int:
        return self.membership.members.version

    def has_quorum(self) -> bool:
        """True unless ``min_cluster_size`` is set and this member sees fewer members."""
        if self.membership.state is State.JOINING:
            return True  # (re)joining: nothing is served here, so a write is moved and retried once joined
        return len(self.membership.members.members) >= self.config.min_cluster_size

    def _has_lease(self) -> bool:
        return self.membership.holds_lease()

    def _values_equal(self, a: bytes, b: bytes) -> bool:
        if a == b:
            return True
        try:
            return bool(self.serializer.loads(a) == self.serializer.loads(b))
        except PeerGridError:
            return False

    def _members_changed(self, old: MemberList, new: MemberList) -> None:
        if old.version == 0 and new.members == (self.membership.me,):
            self.manager.form()
        gone = set(old.uuids) - set(new.uuids)
        if any(not m.leaving for m in old.members if m.uuid in gone) and self.journal.open():
            # A member went without leaving: from where we stand, maybe a split. Journal writes
            # for a merge, those applied but not yet acknowledged too (they may be, on our side).
            log.info("member %s journals its writes for a merge after a split", self.address)
            self.manager.journal_pending(self.journal.clock)
        for uuid in gone:
            for pipe in self._drop_pipes(uuid):
                pipe.close()
            self.publisher.drop_peer(uuid)  # its event streams here, should it still hold any
            member = old.find(uuid)
            if member is not None and self._peers is not None:
                self.spawn(self._peers.drop(member.address))
        self.manager.on_members(new)
        self.subscriptions.on_members(new)
        for near_cache in self.near_caches.values():
            near_cache.on_table()
        self.compute.members_changed()  # locks of members that left are released

    def _removed(self) -> None:
        # Declared dead while it could not answer (paused, cut off): it served nothing since its
        # lease ran out, and joins again as a new member, bringing what it served (partitions
        # the others lost while it was away come back; nothing else: it journaled nothing).
        self.spawn(self._merge_into(None))

    async def _rejoin(self) -> None:
        self.contributor = uuid_module.uuid4().hex
        self.manager.reset()
        for pipe in self._drop_pipes():
            pipe.close()
        self.membership.reset_for_rejoin()
        try:
            await self.membership.join()
        except PeerGridError:
            log.exception("member %s could not rejoin", self.address)

    def _partition_lost(self, partition: int) -> None:
        for listener in list(self._lost_listeners):
            try:
                listener(partition)
            except Exception:
                log.exception("partition-lost listener failed")

    def add_partition_lost_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(partition)`` (on the member's thread) when a partition loses every copy."""
        self._lost_listeners.append(listener)

    # ------------------------------------------------------------------ routing
    def pipe_for(self, partition: int) -> Pipe | None:
        """The pipe to ``partition``'s owner, or None when this member should run it."""
        owner = self.manager.table.owner(partition)
        if owner is None or owner == self.uuid:
            return None
        return self._pipe(owner, self._pipes)

    def pipe_to(self, uuid: str) -> Pipe | None:
        """The pipe for backup writes to member ``uuid`` (any thread).

        Not the callers' pipe: an owner answers a frame of writes only once its
        backups acked them, so backup writes queued behind such frames (with
        ``max_inflight_frames`` reached both ways) would wait on each other.
        """
        return self._pipe(uuid, self._backup_pipes)

    def _pipe(self, uuid: str, pipes: dict[str, Pipe]) -> Pipe | None:
        pipe = pipes.get(uuid)
        if pipe is not None:
            return pipe
        address = self.membership.address_of(uuid)
        if address is None or self.closed:
            return None
        with self._pipes_lock:
            pipe = pipes.get(uuid)
            if pipe is None:
                limits = self.config.limits
                pipe = pipes[uuid] = Pipe(
                    address,
                    self.loop,
                    lambda: self._peer(address).open_stream(),
                    self._frame_header,
                    limits.max_batch_ops,
                    limits.max_inflight_frames,
                    self.config.timing.operation_timeout + self.config.timing.rpc_timeout,
                    lambda version: self.membership.saw_version(version, address),
                )
        return pipe

    def _drop_pipes(self, uuid: str | None = None) -> list[Pipe]:
        """Forget the pipes to ``uuid`` (or to everyone); return them to close."""
        with self._pipes_lock:
            if uuid is None:
                dropped = [*self._pipes.values(), *self._backup_pipes.values()]
                self._pipes, self._backup_pipes = {}, {}
                return dropped
            return [p for p in (self._pipes.pop(uuid, None), self._backup_pipes.pop(uuid, None)) if p]

    def _frame_header(self) -> tuple[int, str]:
        return self.membership.members.version, self.uuid

    def execute_local(self, op: Op) -> Result | asyncio.Future[Result]:
        """Run an op on this member as its would-be owner (loop thread)."""
        return self.executor.execute(op, self.membership.members.version)

    # ------------------------------------------------------------------ transport handlers
    async def join(self, member: Member, partition_count: int, serializer: str, probe: bool) -> JoinReply:
        return await self.membership.handle_join(member, partition_count, serializer, probe)

    def heartbeat(self, uuid: str, list_version: int) -> HeartbeatReply:
        return self.membership.handle_heartbeat(uuid, list_version)

    def publish(self, members: MemberList) -> None:
        self.membership.handle_publish(members)

    async def leave(self, uuid: str, final: bool) -> None:
        await self.membership.handle_leave(uuid, final)

    async def merge(self, into: MemberList) -> None:
        if self._merger is not None:
            await self._merger.handle_merge(into)

    def safe_state(self, merging: bool = False) -> tuple[bool, int, str]:
        """Whether this member has nothing left to do, at which list version, and if not, why.
        Another instance of the cluster answering makes it unsafe, unless ``merging`` (the
        merge asks whether this instance is settled enough to merge with it)."""
        version = self.membership.members.version
        if self.membership.state is not State.ACTIVE:
            return False, version, f"member is {self.membership.state.value}"
        if self._merge_seeds or self._rewriting:
            return False, version, "merging into another instance of the cluster"
        other = self._merger.another_instance() if self._merger is not None and not merging else None
        if other is not None:
            return False, version, f"another instance of the cluster answers at {other}: not merged yet"
        safe, detail = self.manager.safe_state()
        return safe, version, detail

    def frame(
        self, sender: str, table_version: int, ops: list[Op]
    ) -> list[Result] | asyncio.Future[list[Result]]:
        if sender not in self.membership.members:
            # Not a member here: removed (it learns so soon), not admitted yet (it retries), or a
            # member of another instance of the cluster that shares a uuid with ours after a
            # merge. Nothing it sends is applied: its backups least of all.
            message = f"the sender {sender} is not a member of this member's cluster (yet)"
            return [Result(Status.RETRY, message=message) for _ in ops]
        if table_version > self.membership.members.version:
            self.membership.saw_version(table_version, self.membership.address_of(sender))
        results: list[Result | None] = []
        waiting: list[tuple[int, asyncio.Future[Result]]] = []
        for op in ops:
            outcome = self.executor.execute(op, table_version, sender)
            if isinstance(outcome, Result):
                results.append(outcome)
            else:
                waiting.append((len(results), outcome))
                results.append(None)
        if not waiting:
            return results  # type: ignore[return-value]
        return self._gather(results, waiting)

    def _gather(
        self, results: list[Result | None], waiting: list[tuple[int, asyncio.Future[Result]]]
    ) -> asyncio.Future[list[Result]]:
        done: asyncio.Future[list[Result]] = self.loop.create_future()
        remaining = len(waiting)

        def one(index: int, future: asyncio.Future[Result]) -> None:
            nonlocal remaining
            results[index] = (
                future.result() if not future.cancelled() else Result(Status.ERROR, message="cancelled")
            )
            remaining -= 1
            if remaining == 0 and not done.done():
                done.set_result(results)  # type: ignore[arg-type]

        for index, future in waiting:
            future.add_done_callback(lambda f, i=index: one(i, f))  # type: ignore[misc]
        return done

    async def versions(
        self, members: MemberList, partitions: list[int]
    ) -> tuple[int, dict[int, Copy | None]]:
        return await self.manager.handle_versions(members, partitions)

    def fetch(self, members: MemberList, partition: int) -> AsyncIterator[Chunk]:
        return self.manager.handle_fetch(members, partition)

    async def install(self, chunks: AsyncIterator[Chunk]) -> str:
        return await self.manager.handle_install(chunks)

    def release(self, list_version: int, partitions: list[int]) -> None:
        self.manager.handle_release(list_version, partitions)

    def subscribe(
        self, name: str, values: bool, entries: bool, heartbeat_interval: float, peer: str
    ) -> AsyncGenerator[EventBatch, None]:
        return self.publisher.subscribe(name, values, entries, heartbeat_interval, peer)

    def map_stats(self, name: str) -> dict[str, float]:
        return self.local_stats(name).as_dict()  # creates nothing for a map it does not know

    # ------------------------------------------------------------------ maps
    def counters_of(self, name: str) -> MapCounters:
        """This member's counters for map ``name``."""
        counters = self.counters.get(name)
        if counters is None:
            counters = self.counters[name] = MapCounters()
        return counters

    def _serving(self) -> list[int]:
        readable = self.manager.readable
        return [p for p in self.manager.table.owned_by(self.uuid) if readable[p] is not None]

    def _owner_of(self, partition: int) -> str | None:
        return self.manager.table.owner(partition)  # the table current now, not when asked first

    def _served_changed(self) -> None:
        self.owner.usage_dirty = True
        self.compute.members_changed()  # a partition served anew may hold departed members' locks

    def configure_map(self, name: str, config: MapConfig) -> None:
        """Register a map's configuration here (loop thread): policies, near cache."""
        if self.registry.configure(name, config):
            policy = self.registry.policy(name)
            for part in self.manager.parts:
                store = part.maps.get(name) if part is not None else None
                if store is not None:
                    store.set_policy(policy)
            self.owner.usage_dirty = True
        if config.near_cache is not None and name not in self.near_caches:
            near_cache = NearCache(name, config.near_cache, self._owner_of, self.serializer.loads)
            self.near_caches[name] = near_cache
            interval = config.near_cache.max_staleness / 3
            # With values, an owner's change updates cached entries in place: a hot key written
            # elsewhere stays a hit here instead of costing a fetch after every write.
            self.subscriptions.add(name, near_cache, values=True, entries=False, heartbeat=interval)

    def hub(self, name: str, loads: Callable[[bytes], Any]) -> ListenerHub:
        """The listener hub of map ``name`` (loop thread)."""
        hub = self.hubs.get(name)
        if hub is None:
            hub = self.hubs[name] = ListenerHub(name, self.uuid, loads, self.dispatcher)
        return hub

    def local_stats(self, name: str) -> LocalMapStats:
        """This member's statistics of map ``name`` (loop thread)."""
        owned = backup = owned_bytes = backup_bytes = 0
        manager = self.manager
        for p, part in enumerate(manager.parts):
            store = part.maps.get(name) if part is not None else None
            if store is None:
                continue
            index = manager.table.replica_index(p, self.uuid)
            if index == 0:
                owned += store.count()
                owned_bytes += store.nbytes
            elif index is not None:
                backup += store.count()
                backup_bytes += store.nbytes
        # Not counters_of: statistics of a map nobody used here are zeros, and asking for them
        # (a peer may ask about any name) must not create counters for it.
        counters = self.counters.get(name) or MapCounters()
        near_cache = self.near_caches.get(name)
        return LocalMapStats(
            owned_entries=owned,
            backup_entries=backup,
            owned_bytes=owned_bytes,
            backup_bytes=backup_bytes,
            gets=counters.gets,
            hits=counters.hits,
            misses=counters.misses,
            puts=counters.puts,
            removes=counters.removes,
            get_latency_p50=counters.get_latency.percentile(0.5),
            get_latency_p99=counters.get_latency.percentile(0.99),
            put_latency_p50=counters.put_latency.percentile(0.5),
            put_latency_p99=counters.put_latency.percentile(0.99),
            evictions=counters.evictions,
            expirations=counters.expirations,
            near_cache_entries=len(near_cache) if near_cache is not None else 0,
            near_cache_hits=near_cache.hits if near_cache is not None else 0,
            near_cache_misses=near_cache.misses if near_cache is not None else 0,
            backup_lag=manager.replicator.lag(),
            store_loads=counters.store_loads,
            store_writes=counters.store_writes,
            store_failures=counters.store_failures,
            write_behind_pending=self.stores.pending(name),
        )

    # ------------------------------------------------------------------ sync helpers
    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the member's loop from another thread."""
        self.ensure_open()
        return self._thread.run(coro, timeout)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn`` on the member's loop."""
        self._thread.call_soon(fn, *args)
