"""Partition replicas on this member: ownership, migration, backups, release.

Every member keeps, for each partition, at most one complete copy (``parts``).
The partition table says who should hold copies; this module moves data until
they do, and decides when this member may serve a partition as its owner.

Becoming owner (a join, a leave, a death changed the table): the new owner
asks *every* member for its version of the partition, which also makes each
adopt the new member list and so stop serving it. The highest version wins:
if that copy is elsewhere, the owner fetches it, then serves. Sync backups
hold every acknowledged write, so the highest surviving version holds them
too; when no member has a copy the partition is lost, reported, and never
served as empty. A member that cannot be asked (dead but not yet removed)
blocks the decision until the failure detector removes it.

Reads during a hand-off: while the new owner waits for its copy (a transfer
slot, then the transfer), it answers a GET of the partition by asking the
member it copies from to read that copy (``handoff_read``; ``Code.HANDOFF_GET``).
That copy is the newest: every acknowledged write is in it, and no write of the
partition can be acknowledged anywhere until the new owner serves it, so the
read is linearizable, provided the source still holds that version at the same
member list, in which the asker owns the partition (``Executor`` checks this on
the source, with its quorum and lease). A later owner asks the source for its
version before serving, which moves it to a newer list and ends the hand-off;
a source removed from the list stops at its lease, as any owner. Writes wait
for the copy, as before. Without this a join left a moving partition's keys
unreadable for up to the whole migration (a get waited ~1 s behind 300,000
entries; docs/performance.md, "Reads while a partition moves").

Owners keep their backups in sync: a backup whose version differs is sent the
whole partition; once every backup is in sync, members holding copies they
are no longer replicas of are told to release them. ``safe_state`` is true
when none of this is pending on this member.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol

from peergrid.config import GridConfig
from peergrid.errors import LimitExceededError, PeerGridError, PeerUnavailableError, RemoteError
from peergrid.partition import PartitionTable, build_table
from peergrid.protocol import Chunk, Code, Copy, Effect, EffectKind, MemberList, Op, Result, Status
from peergrid.replication.backups import Replicator
from peergrid.replication.slots import TransferSlots
from peergrid.storage import Partition, journal
from peergrid.storage.partition import Policies, journal_effect

log = logging.getLogger("peergrid.replication")

CHUNK_BYTES = 1 << 20  # entries per transfer message, by size
PARALLEL_TRANSFERS = 4  # and one more for a partition a caller waits for (TransferSlots)
_ENTRY_OVERHEAD = 32  # bytes counted per entry and per chunk of a transfer, beyond keys and values
_JOURNALED = frozenset({EffectKind.PUT, EffectKind.DELETE, EffectKind.CLEAR})


class ReplicaPeer(Protocol):
    """The calls replication makes to a peer (``peergrid.transport.PeerClient``)."""

    async def versions(
        self, members: MemberList, partitions: list[int], timeout: float | None = None
    ) -> tuple[int, dict[int, Copy | None]]: ...
    def fetch(
        self, members: MemberList, partition: int, timeout: float | None = None
    ) -> AsyncGenerator[Chunk, None]: ...
    async def install(self, chunks: AsyncIterator[Chunk], timeout: float | None = None) -> str: ...
    async def release(
        self, list_version: int, partitions: list[int], timeout: float | None = None
    ) -> None: ...


class ManagerMember(Protocol):
    """What replication needs of the member."""

    uuid: str
    loop: asyncio.AbstractEventLoop

    def current_members(self) -> MemberList: ...
    def replica_peer(self, uuid: str) -> ReplicaPeer | None: ...
    def pipe_to(self, uuid: str) -> Any: ...
    async def adopt_members(self, members: MemberList) -> None: ...
    def has_quorum(self) -> bool: ...
    def holds_lease(self) -> bool: ...
    def lease_left(self) -> float: ...
    def backup_missed(self, p: int, uuid: str) -> None: ...
    def vouch_lapse(self, members: MemberList) -> float: ...
    def saw_version(self, version: int, uuid: str) -> None: ...


class PartitionManager:
    """The partitions this member holds, and what it does about the table. Loop thread only,
    except ``readable``, which application threads read for owner-local gets."""

    def __init__(
        self,
        config: GridConfig,
        cluster: ManagerMember,
        policies: Policies,
        on_served: Callable[[], None],
    ) -> None:
        self._policies = policies  # record-store policies by map name, for the partitions we create
        self._on_served = on_served  # a partition started or stopped being served here
        self._config = config
        self._timing = config.timing
        self._cluster = cluster
        #: Told of every owner's write this member's backup copy holds (applied now or before),
        #: with the owner's uuid: its near caches take the change from it (``Maps.copy_changed``).
        self.copy_changed: Callable[[str, int, int, Sequence[Effect]], None] = lambda *_: None
        self._me = self.uuid = cluster.uuid
        self.lost_listeners: list[Callable[[int], None]] = []  # told of a partition that lost every copy
        count = config.partition_count
        self.table = PartitionTable(0, tuple(() for _ in range(count)))
        self.parts: list[Partition | None] = [None] * count
        #: ``readable[p]`` is ``parts[p]`` while this member is p's serving owner, else None.
        #: Application threads read it without a lock: replacing a list slot is atomic.
        self.readable: list[Partition | None] = [None] * count
        self.lost: set[int] = set()
        self.replicator = Replicator(config, cluster, repair=self._repair_backup, resync=self._start_sync)
        self._holders: dict[int, set[str]] = {}  # p -> non-replica members seen holding a copy
        self._sync_job: asyncio.Task[None] | None = None
        self._sync_again = False  # asked to sync while the job ran: it makes one more pass
        # Answers to our version queries about partitions we own and do not serve yet:
        # p -> uuid -> its copy (None: none); kept while we own p without a break.
        self._answers: dict[int, dict[str, Copy | None]] = {}
        self._owned_since: dict[int, int] = {}  # p -> table version since which we own it
        self._table_at = 0.0  # time.monotonic() when the table last changed (for the log)
        self._leftover_job: asyncio.Task[None] | None = None  # asking owners about our leftover copies
        self._warned_partitions = False  # more members than partition_count / 2, said once
        self._backup_jobs: dict[tuple[int, str], asyncio.Task[int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._transfer_slots = TransferSlots(PARALLEL_TRANSFERS)
        self._stopped = False
        self._table_moves = asyncio.Event()  # set, and replaced, at each new table
        self._slow_peers: dict[str, int] = {}  # uuid -> version questions it let expire in a row
        # Partitions we own and are copying from another member, until we serve them:
        # p -> (the source's uuid, the version of its copy, the table version we decided at).
        self.handoffs: dict[int, tuple[str, int, int]] = {}

    # ------------------------------------------------------------------ table changes
    def form(self) -> None:
        """This member starts the cluster: it holds every partition, empty, at version 0."""
        self.parts = [Partition(p, 0, self._policies) for p in range(self._config.partition_count)]

    def on_members(self, members: MemberList) -> None:
        """A new member list was adopted: derive the table and act on it."""
        replica_count = 1 + self._config.backup_count + self._config.async_backup_count
        table = build_table(
            members.version,
            members.placement(),
            self._config.partition_count,
            replica_count,
            self._config.vnodes,
        )
        old, self.table = self.table, table
        self._table_at = time.monotonic()
        self._transfer_slots.forget()
        self._table_moves.set()
        self._table_moves = asyncio.Event()
        if len(members.members) * 2 > self._config.partition_count and not self._warned_partitions:
            self._warned_partitions = True
            log.warning(
                "cluster has %d members for %d partitions: with fewer than two partitions a member, "
                "load is uneven and some members may own nothing; choose a larger partition_count "
                "for every member (docs/operations.md, 'Choosing partition_count')",
                len(members.members),
                self._config.partition_count,
            )
        for p in range(table.partition_count):
            owner = table.owner(p)
            if owner == self._me:
                if old.owner(p) != self._me:
                    self.readable[p] = None  # must sync before serving
                    self._owned_since[p] = table.version
                    self._answers.pop(p, None)
                # Former replicas keep their copies until we release them.
                dropped = {u for u in old.replicas[p] if u != self._me and u not in table.replicas[p]}
                if dropped:
                    self._holders.setdefault(p, set()).update(dropped)
            else:
                self.readable[p] = None
                self._owned_since.pop(p, None)
                self._answers.pop(p, None)
        for answers in self._answers.values():
            for uuid in [u for u in answers if u not in members]:
                del answers[uuid]  # (one admitted again under its uuid starts empty: ask it again)
        for uuid in [u for u in self._slow_peers if u not in members]:
            del self._slow_peers[uuid]
        self.replicator.on_table(table)
        self._on_served()
        self._start_sync()
        self._watch_leftovers()

    def may_change(self) -> bool:
        """This member may change the partitions it owns on its own (an expiry sweep, dropping a
        departed holder's lock, keeping a value loaded from a store, dequeuing written-behind
        entries) or go on with a write it admitted before an await (a store call): it has quorum
        and holds its lease, as a client's write needs (``Executor.admit``)."""
        return self._cluster.has_quorum() and self._cluster.holds_lease()

    def journal_pending(self, clock: journal.HybridClock) -> None:
        """Journaling just began (maybe a split): journal the writes still waiting for their
        backups, which may yet be acknowledged on this side only. An increment among them ends
        INDETERMINATE, unjournaled, instead: a backup beyond the split may have applied it
        already, and a merge adding it again would count it twice.

        Each is stamped with the time it was applied, not now: its backup beyond the split may
        hold it, and the other side may have written the key since; stamped later than that
        write, a merge would bring the older value back over it (Jepsen cut-one with
        ``min_cluster_size=3``: a cut-off owner took over as master 2.6 s after such a write,
        journaled it then, and its merge undid a delete the majority had acknowledged).

        The backups took these writes unstamped: each is sent the records (unversioned, as
        access times are), so that one taking the partition over on this side, should the
        owner die before the merge, brings them too."""

        def journaled(p: int, applied_at: float, effects: Sequence[Effect]) -> bool:
            part = self.parts[p]
            if any(e.kind == EffectKind.DELTA for e in effects):
                return False
            if part is not None:
                records = []
                for effect in effects:
                    if not effect.stamp and effect.kind in _JOURNALED:
                        stamp = part.stamp_after(effect, journal.stamp_of(applied_at))
                        clock.observe(stamp)
                        part.note(effect._replace(stamp=stamp))
                        key = effect.key if effect.kind != EffectKind.CLEAR else journal.WHOLE_MAP
                        rec = journal.record(stamp, effect.kind != EffectKind.PUT)
                        records.append(journal_effect(effect.map, key, rec))
                if records:
                    self.replicator.touch(p, records)
            return True

        self.replicator.settle_pending(journaled)

    def prune_journals(self, oldest: int, most: int) -> None:
        """Drop journal records older than the merge horizon, and beyond ``most`` per partition."""
        for part in self.parts:
            if part is not None and part.journal is not None:
                part.prune_journal(oldest, most)

    def reset(self) -> None:
        """Drop every copy (this member was removed and will join again)."""
        self.parts = [None] * self._config.partition_count
        # In place: map handles hold this very list for their owner-local reads.
        self.readable[:] = [None] * self._config.partition_count
        self.lost.clear()
        self._holders.clear()
        self._answers.clear()
        self._owned_since.clear()
        self.table = PartitionTable(0, tuple(() for _ in range(self._config.partition_count)))
        if self._sync_job is not None:
            self._sync_job.cancel()
        for job in self._backup_jobs.values():
            job.cancel()
        self._backup_jobs.clear()
        self.replicator.reset()

    def _start_sync(self) -> None:
        if self._sync_job is None or self._sync_job.done():
            self._sync_job = asyncio.ensure_future(self._sync_forever())
        else:
            # The running job makes one more pass: what asked for this one may have undone part
            # of its work (anti-entropy marked every backup unsure while it pushed copies to a
            # newcomer: it ended with them unsure, and the cluster unsafe until the next pass).
            self._sync_again = True

    # ------------------------------------------------------------------ owner sync
    def _unready_owned(self) -> list[int]:
        return [p for p in self.table.owned_by(self._me) if self.readable[p] is None and p not in self.lost]

    def _unsynced_backups(self) -> bool:
        """Whether a partition we serve has a backup, still a member, not known to hold it."""
        table, synced = self.table, self.replicator.is_synced
        for p in table.owned_by(self._me):
            if self.readable[p] is None:
                continue
            for uuid in table.replicas[p][1:]:
                if not synced(p, uuid) and self._cluster.replica_peer(uuid) is not None:
                    return True
        return False

    async def _sync_forever(self) -> None:
        """Become ready for every owned partition, then bring backups in sync and release leftovers.

        Ends once every backup holds its copy. A push that failed (the backup refused it, or
        its stream broke) is tried again after a pause that doubles, from ``retry_max`` up to
        ``failure_timeout``, or at once when the table moves: not left to anti-entropy, whose
        next pass may be ``anti_entropy_interval`` away, with the partition on one copy.
        """
        pause = self._timing.retry_max
        while not self._stopped:
            version = self.table.version
            self._sync_again = False
            try:
                todo = self._unready_owned()
                if todo:
                    await self._take_ownership(todo, version)
                    log.info(
                        "serves %d partitions it took over %.2fs after member list %d",
                        len(todo),
                        time.monotonic() - self._table_at,
                        version,
                    )
                if self.table.version == version:
                    await self._sync_all_backups(version)
                if self.table.version == version:
                    await self._release_leftovers(version)
            except _TableMovedError:
                continue
            except PeerGridError as exc:
                # Said at INFO once it has taken longer than a failure timeout: what holds it up.
                slow = time.monotonic() - self._table_at > self._timing.failure_timeout
                log.log(
                    logging.INFO if slow else logging.DEBUG,
                    "partition sync at table %d will retry: %s",
                    version,
                    exc,
                )
                if isinstance(exc, _StaleTableError):
                    # Until we hold that newer list (its publication, or our pull of it, brings
                    # it), every member asked again answers the same and its answer is dropped:
                    # a 100-member start sent five times the version queries it needed, most of
                    # them from members a list behind, asking everyone every second.
                    await self._table_moved(version, self._timing.failure_timeout)
                else:
                    await asyncio.sleep(self._timing.heartbeat_interval)
                continue
            if self.table.version != version or self._unready_owned() or self._sync_again:
                continue
            if not self._unsynced_backups():
                return
            log.debug("backups left out of sync at table %d: again in %.2fs", version, pause)
            await self._table_moved(version, pause)
            pause = min(pause * 2, self._timing.failure_timeout)

    async def _table_moved(self, version: int, timeout: float) -> None:
        """Return once the table is newer than ``version``, or after ``timeout`` seconds."""
        if self.table.version == version:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._table_moves.wait(), timeout)

    async def _ask_versions(self, partitions: list[int], version: int) -> dict[int, list[tuple[int, str]]]:
        """Every member's complete copies of ``partitions``: ``p -> [(version, uuid)]``.

        Raises ``PeerUnavailableError`` when a member does not answer: its copy
        might be the newest, so no decision is made without it. Answers are
        kept while this member owns the partition without a break, across
        retries and newer tables: a member that answered had adopted a table
        in which we own it, so it serves none of it, and no one else serves it
        while we own it (another owner in a table we skipped asked us, and was
        told of our newer list: it serves nothing then, see below). At a
        hundred members, asking everyone again at each retry or list change
        never completed on a busy machine.
        """
        members = self._cluster.current_members()
        asks: dict[str, list[int]] = {}
        for member in members.members:
            missing = [p for p in partitions if member.uuid not in self._answers.get(p, {})]
            if member.uuid != self._me and missing:
                asks[member.uuid] = missing
        moves = self._table_moves
        self._check_table(version)
        questions = asyncio.gather(
            *(self._versions_of(uuid, members, asked) for uuid, asked in asks.items()), return_exceptions=True
        )
        # A new table ends the round at once: a question to a slow member may wait up to four
        # control-call deadlines (``_versions_of``), and one that is being removed answers none.
        moved = asyncio.ensure_future(moves.wait())
        try:
            await asyncio.wait((questions, moved), return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
            if not questions.done():
                questions.cancel()
                # Cancelled, a gather ends with the CancelledError as its exception, which
                # nothing reads: logged when collected (and a finalizer that formats a traceback
                # can run inside anything, an ast.parse of another thread's included).
                questions.add_done_callback(_read_out)
        if not questions.done() or questions.cancelled():
            raise _TableMovedError
        results = questions.result()
        await _lapse(self._cluster.vouch_lapse(members))  # as each member asked did (handle_versions)
        failed: Exception | None = None
        stale: _StaleTableError | None = None
        for (uuid, asked), result in zip(asks.items(), results, strict=True):
            if isinstance(result, Exception):
                failed = failed or result
            elif isinstance(result, BaseException):
                raise result
            elif result[0] > members.version:
                # It runs a newer list, which may name another owner: one that asked it and
                # serves (a member that skipped our table keeps serving what it owned in both).
                self._cluster.saw_version(result[0], uuid)
                stale = stale or _StaleTableError(
                    f"{uuid} runs member list {result[0]}, newer than {members.version}"
                )
            elif uuid in self._cluster.current_members():  # (not removed meanwhile)
                for p in asked:
                    # Kept only while we have owned p since before we asked, without a break.
                    if self._owned_since.get(p, version + 1) <= version:
                        self._answers.setdefault(p, {})[uuid] = result[1].get(p)
        self._check_table(version)
        if stale is not None:
            raise stale  # (before other failures: the retry waits for the newer list)
        if failed is not None:
            raise failed
        copies: dict[int, list[tuple[int, str]]] = {p: [] for p in partitions}
        for p in partitions:
            part = self.parts[p]
            if part is not None:
                copies[p].append((part.version, self._me))
            answers = self._answers.get(p, {})
            for member in members.members:
                copy = answers.get(member.uuid)
                if copy is not None and member.uuid != self._me:
                    copies[p].append((copy.version, member.uuid))
        return copies

    async def _versions_of(
        self, uuid: str, members: MemberList, partitions: list[int]
    ) -> tuple[int, dict[int, Copy | None]]:
        peer = self._cluster.replica_peer(uuid)
        if peer is None:
            return 0, {}
        # Twice as long after each question it let expire, up to four times: on an overloaded
        # machine (a hundred members starting on two cores) half the questions expired at the
        # control-call deadline and were asked again, each costing both ends again.
        slow = self._slow_peers.get(uuid, 0)
        try:
            timeout = self._timing.rpc_timeout * 2 ** min(slow, 2)
            found = await peer.versions(members, partitions, timeout=timeout)
        except PeerUnavailableError as exc:
            if not exc.refused:
                self._slow_peers[uuid] = slow + 1
            raise
        self._slow_peers.pop(uuid, None)
        return found

    async def _take_ownership(self, partitions: list[int], version: int) -> None:
        copies = await self._ask_versions(partitions, version)
        fetches = []
        for p in partitions:
            holders = copies[p]
            self._holders[p] = {uuid for _, uuid in holders if uuid != self._me}
            if not holders:
                self._declare_lost(p)
                continue
            best_version, best = max(holders)
            part = self.parts[p]
            log.debug(
                "partition %d at table %d: copies %s; serving the one of %s at version %d",
                p,
                version,
                holders,
                best,
                best_version,
            )
            if best == self._me or (part is not None and part.version == best_version):
                self._serve(p)
            else:
                fetches.append(self._fetch_and_serve(p, best, best_version, version))
        results = await asyncio.gather(*fetches, return_exceptions=True)
        self._check_table(version)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _fetch_and_serve(self, p: int, source: str, copy_version: int, version: int) -> None:
        handoff = self.handoffs[p] = (source, copy_version, version)  # gets are read there meanwhile
        try:
            await self._fetch(p, source, version)
        finally:
            if self.handoffs.get(p) == handoff:
                del self.handoffs[p]

    async def _fetch(self, p: int, source: str, version: int) -> None:
        async with self._transfer_slots.slot(p):
            self._check_table(version)
            peer = self._cluster.replica_peer(source)
            if peer is None:
                raise _TableMovedError
            fetch = peer.fetch(self._cluster.current_members(), p, timeout=self._timing.rpc_timeout * 10)
            try:
                async with contextlib.aclosing(fetch) as chunks:
                    staging = await self._staged(chunks, p)
            except LimitExceededError:
                raise
            except ValueError as exc:
                raise RemoteError(f"partition {p} transfer from {source} was malformed: {exc}") from exc
            except PeerGridError:
                # Ask it again: its copy may be gone (a member removed and admitted again under
                # its uuid starts empty, and we may not have seen the list without it).
                self._answers.get(p, {}).pop(source, None)
                raise
            self._check_table(version)
            self.parts[p] = staging
            self._serve(p)

    async def _staged(self, chunks: AsyncIterator[Chunk], expected: int | None = None) -> Partition:
        """Collect one transfer into a new copy, checking what the sender may not do.

        Every chunk must carry the same partition (``expected``, if given) at
        the same version, and the copy counts only once its last chunk arrived.
        Raises ``ValueError`` for a malformed transfer and ``LimitExceededError``
        past ``limits.max_transfer_bytes``, so a transfer that never ends cannot
        exhaust memory.
        """
        limit = self._config.limits.max_transfer_bytes
        staging: Partition | None = None
        size = 0
        async for chunk in chunks:
            if staging is None:
                if not 0 <= chunk.partition < len(self.parts):
                    raise ValueError(f"partition {chunk.partition} is out of range 0..{len(self.parts) - 1}")
                if expected is not None and chunk.partition != expected:
                    raise ValueError(f"asked for partition {expected}, sent {chunk.partition}")
                staging = Partition(chunk.partition, chunk.version, self._policies)
            elif (chunk.partition, chunk.version) != (staging.id, staging.version):
                raise ValueError("the chunks of one transfer must carry one partition at one version")
            size += _ENTRY_OVERHEAD + sum(
                len(e.map) + len(e.key) + len(e.value) + _ENTRY_OVERHEAD for e in chunk.entries
            )
            if size > limit:
                raise LimitExceededError(
                    f"partition {staging.id} transfer exceeds limits.max_transfer_bytes={limit}"
                )
            staging.apply(chunk.entries)
            if chunk.last:
                return staging
        raise ValueError("the transfer ended before its last chunk")

    def _serve(self, p: int) -> None:
        if self.table.owner(p) == self._me:
            self._answers.pop(p, None)
            self.handoffs.pop(p, None)
            self.readable[p] = self.parts[p]
            self._on_served()

    def _declare_lost(self, p: int) -> None:
        if p not in self.lost:
            self.lost.add(p)
            log.error("partition %d lost every copy: its entries cannot be served", p)
            for listener in list(self.lost_listeners):
                try:
                    listener(p)
                except Exception:
                    log.exception("partition-lost listener failed")

    def recover(self, p: int) -> bool:
        """Serve lost partition ``p`` again, empty, if we own it; True if it was lost."""
        if p not in self.lost or self.table.owner(p) != self._me:
            return False
        self.lost.discard(p)
        self.parts[p] = Partition(p, 0, self._policies)
        self._serve(p)
        self._start_sync()  # rebuild its backups
        log.warning("partition %d serves again, empty, after its loss was acknowledged", p)
        return True

    def _check_table(self, version: int) -> None:
        if self.table.version != version or self._stopped:
            raise _TableMovedError

    # ------------------------------------------------------------------ backups
    async def _sync_all_backups(self, version: int) -> None:
        by_backup: dict[str, list[int]] = {}
        for p in self.table.owned_by(self._me):
            if self.readable[p] is None:
                continue
            for uuid in self.table.replicas[p][1:]:
                if not self.replicator.is_synced(p, uuid):
                    by_backup.setdefault(uuid, []).append(p)
        members = self._cluster.current_members()
        jobs = [
            self._sync_backups_on(uuid, partitions, members, version)
            for uuid, partitions in by_backup.items()
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _sync_backups_on(
        self, uuid: str, partitions: list[int], members: MemberList, version: int
    ) -> None:
        peer = self._cluster.replica_peer(uuid)
        if peer is None:
            return
        theirs, found = await peer.versions(members, partitions, timeout=self._timing.rpc_timeout)
        self._check_table(version)
        if theirs > members.version:
            # The backup knows a newer member list: ours may be stale (we may have been dropped,
            # and the backup promoted, its versions counting another history than ours). Its
            # versions prove nothing here. Membership learns the newer list (a new table, and a
            # new sync) from its next heartbeat.
            return
        for p in partitions:
            part = self.readable[p]
            reported = found.get(p)
            if (
                part is not None
                and reported is not None
                and self.replicator.holds(p, uuid, reported.version, part.version)
            ):
                self.replicator.mark_synced(p, uuid, reported.version)
        await asyncio.gather(
            *(self.sync_backup(p, uuid) for p in partitions if not self.replicator.is_synced(p, uuid))
        )

    def _repair_backup(self, p: int, uuid: str) -> asyncio.Task[int]:
        """``sync_backup`` for a write that waits for it (its backup answered GAP): hurried."""
        self._transfer_slots.hurry(p)
        return self.sync_backup(p, uuid)

    def sync_backup(self, p: int, uuid: str) -> asyncio.Task[int]:
        """Send partition ``p`` to backup ``uuid`` (one transfer at a time per pair)."""
        job = self._backup_jobs.get((p, uuid))
        if job is None or job.done():
            job = asyncio.ensure_future(self._push(p, uuid))
            self._backup_jobs[(p, uuid)] = job
            job.add_done_callback(functools.partial(self._backup_job_done, (p, uuid)))
        return job

    def _backup_job_done(self, key: tuple[int, str], job: asyncio.Task[int]) -> None:
        if self._backup_jobs.get(key) is job:
            del self._backup_jobs[key]

    async def _push(self, p: int, uuid: str) -> int:
        """Send our copy of ``p``; return the version sent, or -1."""
        async with self._transfer_slots.slot(p):
            part = self.readable[p]
            peer = self._cluster.replica_peer(uuid)
            if part is None or peer is None or uuid not in self.table.replicas[p][1:]:
                return -1
            version, table_version = part.version, self.table.version
            try:
                await peer.install(self._chunks(part, version), timeout=self._timing.rpc_timeout * 10)
            except PeerGridError as exc:
                log.debug("sending partition %d to %s failed: %s", p, uuid, exc)
                return -1
            if self.table.version != table_version:
                # The table moved while we sent: the backup may since have been told to drop it.
                return -1
            self.replicator.mark_synced(p, uuid, version)
            return version

    def chunks(self, part: Partition, restore: bool = False) -> AsyncIterator[Chunk]:
        """``part`` as a transfer (``restore``: offered to an owner that lost it)."""
        return self._chunks(part, part.version, restore)

    async def _chunks(self, part: Partition, version: int, restore: bool = False) -> AsyncIterator[Chunk]:
        entries = []
        size = 0
        list_version = self._cluster.current_members().version
        for effect in part.snapshot():
            entries.append(effect)
            size += len(effect.key) + len(effect.value) + 32
            if size >= CHUNK_BYTES:
                yield Chunk(part.id, version, tuple(entries), False, list_version, self._me, restore)
                entries, size = [], 0
                await asyncio.sleep(0)  # let the member serve while a big partition streams
        yield Chunk(part.id, version, tuple(entries), True, list_version, self._me, restore)

    # ------------------------------------------------------------------ release
    async def _release_leftovers(self, version: int) -> None:
        """Tell members holding copies they are not replicas of to drop them."""
        by_holder: dict[str, list[int]] = {}
        for p, holders in list(self._holders.items()):
            if self.readable[p] is None or not self.replicator.all_synced(p):
                continue
            replicas = self.table.replicas[p]
            for uuid in holders:
                if uuid not in replicas:
                    by_holder.setdefault(uuid, []).append(p)
            del self._holders[p]
        for uuid, partitions in by_holder.items():
            peer = self._cluster.replica_peer(uuid)
            if peer is not None:
                with contextlib.suppress(PeerGridError):
                    await peer.release(version, partitions, timeout=self._timing.rpc_timeout)

    def handle_release(self, list_version: int, partitions: Iterable[int]) -> None:
        """The owner says our copies of ``partitions`` are no longer needed."""
        if list_version > self.table.version:
            # We may not know yet that we are a replica: keep it until we catch up, then ask
            # the owners ourselves (the release is not sent again).
            self._watch_leftovers()
            return
        for p in partitions:
            if 0 <= p < len(self.parts) and self.table.replica_index(p, self._me) is None:
                self.parts[p] = None

    def hurry(self, p: int) -> None:
        """A caller waits for owned partition ``p`` to be served here (a write, or a read no
        copy on its way could answer): its transfer goes before the others (``TransferSlots``)."""
        self._transfer_slots.hurry(p)

    def handoff_read(self, op: Op) -> asyncio.Future[Result] | None:
        """``op`` (a GET of a partition we own and are copying) read from the copy on its way
        here, or None when there is no such copy at our current table. The answer is the
        source's (``Executor`` checks there that it may give it), or RETRY when it cannot."""
        handoff = self.handoffs.get(op.partition)
        if handoff is None:
            return None
        source, copy_version, version = handoff
        pipe = self._cluster.pipe_to(source)
        if version != self.table.version or pipe is None:
            return None
        loop, timeout = self._cluster.loop, self._timing.rpc_timeout
        future: asyncio.Future[Result] = loop.create_future()
        ask = Op(Code.HANDOFF_GET, op.partition, op.map, op.key, version=copy_version)
        pipe.submit(_HandoffRead(ask, future, time.monotonic() + timeout))
        timer = loop.call_later(timeout, _handoff_failed, future, op.partition, "no answer in time")
        future.add_done_callback(lambda _: timer.cancel())
        return future

    # ------------------------------------------------------------------ serving peers
    async def handle_versions(
        self, members: MemberList, partitions: list[int]
    ) -> tuple[int, dict[int, Copy | None]]:
        """A new owner asks for our copies; adopting its list first makes us stop serving them
        (``ClusterError`` when its list cannot be confirmed: then we answer nothing)."""
        await self._cluster.adopt_members(members)
        # A member the asker's list dropped may still serve on our answers to its heartbeats:
        # the asker may serve only once that lease ran out (``Membership.vouch_lapse``).
        await _lapse(self._cluster.vouch_lapse(members))
        found: dict[int, Copy | None] = {}
        for p in partitions:
            if 0 <= p < len(self.parts):
                part = self.parts[p]
                found[p] = Copy(part.version, self._replicated(p)) if part is not None else None
        return self._cluster.current_members().version, found

    def _replicated(self, p: int) -> bool:
        """We own and serve ``p`` and every backup holds it: other copies are no longer needed."""
        return self.readable[p] is not None and self.replicator.all_synced(p)

    async def handle_fetch(self, members: MemberList, p: int) -> AsyncIterator[Chunk]:
        """Stream our copy of ``p`` to its new owner."""
        await self._cluster.adopt_members(members)
        part = self.parts[p] if 0 <= p < len(self.parts) else None
        if part is None:
            raise PeerGridError(f"this member holds no copy of partition {p}")
        async for chunk in self._chunks(part, part.version):
            yield chunk

    async def handle_install(self, chunks: AsyncIterator[Chunk]) -> str:
        """An owner sends us its whole copy of a partition (see ``_staged`` for what is refused),
        or a merging member a copy to restore (``Chunk.restore``: see ``restore``)."""
        restoring: list[bool] = []
        senders: set[str] = set()
        lists: list[int] = []

        async def noted() -> AsyncIterator[Chunk]:
            async for chunk in chunks:
                restoring.append(chunk.restore)
                senders.add(chunk.sender)
                lists.append(chunk.list_version)
                yield chunk

        staging = await self._staged(noted())
        strangers = senders - set(self._cluster.current_members().uuids)
        if strangers:
            # Only a member of this instance may give us a copy (one of another instance that
            # shares a uuid with ours, after a merge, holds a different history).
            raise PeerGridError(f"a partition copy from {', '.join(sorted(strangers))}, not a member here")
        if restoring[0]:
            return self.restore(staging)
        if any(self._replaced(staging.id, sender, min(lists)) for sender in senders):
            # As for a backup write (``apply_backup``): a replaced owner's copy (sent before it was
            # cut off or paused, delivered after) may carry the version number of a write of the
            # new owner that we hold, with its own history behind it. Taken, that version would
            # name two histories, and a take-over comparing versions could serve the one without
            # the new owner's acknowledged write.
            current = self.parts[staging.id]
            message = (
                f"a copy of partition {staging.id} at version {staging.version} from "
                f"{', '.join(sorted(senders))}, not its owner by member list {self.table.version} (the "
                f"sender ran list {min(lists)}; our copy: "
                f"{'none' if current is None else f'version {current.version}'})"
            )
            log.info("refused %s", message)
            raise PeerGridError(message)
        if self.readable[staging.id] is not None:
            return ""  # we serve this partition ourselves: never swap it under readers
        current = self.parts[staging.id]
        if current is None or current.version <= staging.version:
            self.parts[staging.id] = staging
        return ""

    def restore(self, copy: Partition) -> str:
        """A merging member's copy of a partition this member owns: serve it if ours was lost.

        Every copy of the partition was on the other side of a split that healed: the copy
        comes back whole (readers never see part of it). Answers ``"restored"``; ``"served"``
        when this member serves the partition with data of its own (the merging member sends
        its changes instead); ``"retry"`` while it is still taking the partition over;
        ``"moved"`` when another member owns it now.
        """
        p = copy.id
        if self.table.owner(p) != self._me:
            return "moved"
        if p in self.lost:
            self.lost.discard(p)
            self.parts[p] = copy
            self._serve(p)
            self._start_sync()  # build its backups
            log.warning("partition %d lost every copy here; a merging member brought it back", p)
            return "restored"
        return "retry" if self.readable[p] is None else "served"

    # ------------------------------------------------------------------ backups' side
    def apply_backup(
        self, p: int, version: int, effects: Iterable[Effect], caller_version: int, sender: str = ""
    ) -> int:
        """Apply an owner's write on this backup copy; return the op status.

        Writes apply strictly in version order; a gap asks the owner for the
        whole partition. A copy may receive writes whatever our table says
        (the version order keeps it consistent); only a member that holds no
        copy and, by a table at least as new as the owner's, is no replica
        answers MOVED. So does a copy whose newer table names another owner
        than ``sender``: a write of a stale owner (paused, or cut off, and
        replaced meanwhile) would otherwise take the version number of the new
        owner's next write, which the copy would then skip.
        """
        if sender and self._replaced(p, sender, caller_version):
            return Status.MOVED
        part = self.parts[p]
        if part is None:
            if self.table.replica_index(p, self._me) is None and self.table.version >= caller_version:
                return Status.MOVED
            return Status.GAP
        if self.readable[p] is not None:
            return Status.MOVED  # we are the serving owner: a stale owner is writing
        if version <= part.version:
            # Held already (a copy brought it): near caches may not have seen it, and order
            # changes by version, so an old one changes nothing.
            if sender:
                self.copy_changed(sender, p, version, tuple(effects))
            return Status.OK
        if version != part.version + 1:
            return Status.GAP
        effects = tuple(effects)
        part.apply(effects)
        part.version = version
        if sender:
            self.copy_changed(sender, p, version, effects)  # before the ack: see Executor._write
        return Status.OK

    def _replaced(self, p: int, sender: str, list_version: int) -> bool:
        """``sender``, running member list ``list_version``, owned ``p`` in an older table than
        ours, which names another owner: its writes and copies of ``p`` are refused."""
        return list_version < self.table.version and self.table.owner(p) != sender

    # ------------------------------------------------------------------ upkeep
    def apply_touch(
        self, p: int, effects: Iterable[Effect], caller_version: int = 0, sender: str = ""
    ) -> None:
        """An owner's read times for our copy of ``p`` (idle expiry), or journal records of writes
        it journaled late (``journal_pending``); not from an owner our newer table replaced
        (such a touch can arrive once a cut heals)."""
        if sender and self._replaced(p, sender, caller_version):
            return
        part = self.parts[p]
        if part is not None and self.readable[p] is None:
            part.apply(effects)

    async def anti_entropy(self) -> None:
        """Compare versions with backups and repair; re-check leftovers with owners."""
        version = self.table.version
        for p in self.table.owned_by(self._me):
            for uuid in self.table.replicas[p][1:]:
                self.replicator.mark_unsure(p, uuid)
        self._start_sync()
        await self._check_leftovers(version)

    def _leftovers(self) -> list[int]:
        """Partitions we hold a copy of but are no replica of."""
        return [
            p
            for p, part in enumerate(self.parts)
            if part is not None and self.table.replica_index(p, self._me) is None
        ]

    def _watch_leftovers(self) -> None:
        """While we hold leftovers, ask their owners soon and then less often (a release can be
        lost, or come before we adopted its table): not only at the next anti-entropy pass,
        which would keep the cluster unsafe for up to ``anti_entropy_interval``."""
        if self._stopped or (self._leftover_job is not None and not self._leftover_job.done()):
            return
        self._leftover_job = asyncio.ensure_future(self._leftovers_until_released())

    async def _leftovers_until_released(self) -> None:
        delay = self._timing.rpc_timeout / 4
        while self._leftovers() and not self._stopped:
            await asyncio.sleep(delay)
            with contextlib.suppress(PeerGridError):
                await self._check_leftovers(self.table.version)
            # At most rpc_timeout apart: an owner whose backups take long to sync (many members
            # joined at once) would otherwise be asked again only after 12, 24, 30 s, and the
            # cluster would stay unsafe that long after the copies were in place.
            delay = min(delay * 2, self._timing.rpc_timeout)

    async def check_leftovers(self) -> None:
        """Drop copies of partitions we are no replica of, once their owner holds as much."""
        await self._check_leftovers(self.table.version)

    async def _check_leftovers(self, version: int) -> None:
        by_owner: dict[str, list[int]] = {}
        for p, part in enumerate(self.parts):
            if part is not None and self.table.replica_index(p, self._me) is None:
                owner = self.table.owner(p)
                if owner is not None and owner != self._me:
                    by_owner.setdefault(owner, []).append(p)
        members = self._cluster.current_members()
        for owner, partitions in by_owner.items():
            peer = self._cluster.replica_peer(owner)
            if peer is None:
                continue
            try:
                _, found = await peer.versions(members, partitions, timeout=self._timing.rpc_timeout)
            except PeerGridError:
                continue
            if self.table.version != version:
                return
            for p in partitions:
                part = self.parts[p]
                theirs = found.get(p)
                # Only once the owner's whole replica set holds it: dropping earlier would leave
                # one copy during a migration, and one failure would lose it.
                if (
                    part is not None
                    and theirs is not None
                    and theirs.replicated
                    and theirs.version >= part.version
                ):
                    self.parts[p] = None

    def safe_state(self) -> tuple[bool, str]:
        """Whether this member has nothing left to move, and if not, why."""
        if self._sync_job is not None and not self._sync_job.done():
            return False, "partition sync running"
        unready = self._unready_owned()
        if unready:
            return False, f"{len(unready)} owned partitions not ready (first: {unready[0]})"
        for p in self.table.owned_by(self._me):
            if p in self.lost:
                continue
            if not self.replicator.all_synced(p):
                return False, f"partition {p} has a backup out of sync"
        leftovers = self._leftovers()
        if leftovers:
            return False, f"{len(leftovers)} copies held of partitions this member is no replica of"
        return True, ""

    def owned_copies(self) -> list[Partition]:
        """The partitions this member owns and serves (a merge brings them to the other instance)."""
        return [part for p in self.table.owned_by(self._me) if (part := self.readable[p]) is not None]

    def spare_copies(self) -> list[Partition]:
        """The copies this member holds but does not serve: backups, and partitions it owns but
        has not yet taken over. A merge offers them too (they may be the last copies)."""
        return [part for p, part in enumerate(self.parts) if part is not None and self.readable[p] is None]

    def holds_nothing(self) -> bool:
        """True when this member holds no copy (a leaving member may stop)."""
        return all(part is None for part in self.parts)

    async def stop(self) -> None:
        """Cancel background work."""
        self._stopped = True
        jobs: list[asyncio.Task[Any]] = [
            j for j in (self._sync_job, self._leftover_job, *self._backup_jobs.values()) if j is not None
        ]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await self.replicator.stop()

    def entry_counts(self) -> tuple[int, int]:
        """Entries in owned partitions and in backup copies, over every map."""
        owned = backup = 0
        for p, part in enumerate(self.parts):
            if part is None:
                continue
            index = self.table.replica_index(p, self._me)
            if index == 0:
                owned += part.entry_count()
            elif index is not None:
                backup += part.entry_count()
        return owned, backup


def _read_out(future: asyncio.Future[Any]) -> None:
    """Mark the exception of a future nothing awaits any more as read."""
    if not future.cancelled():
        future.exception()


class _HandoffRead:
    """A GET sent to the member whose copy of the partition is on its way to us (pipe item)."""

    __slots__ = ("deadline", "future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Result], deadline: float) -> None:
        self.op = op
        self.future = future
        self.deadline = deadline  # monotonic: the pipe does not send it later

    def handle(self, result: Result) -> None:
        if result.status != Status.OK:
            _handoff_failed(self.future, self.op.partition, result.message or f"status {result.status}")
        elif not self.future.done():
            self.future.set_result(result)


def _handoff_failed(future: asyncio.Future[Result], p: int, why: str) -> None:
    if not future.done():
        message = f"partition {p} is migrating to this member; its copy's source did not read it: {why}"
        future.set_result(Result(Status.RETRY, message=message))


async def _lapse(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


class _TableMovedError(PeerGridError):
    """The table changed under a sync step; start over with the new one."""


class _StaleTableError(PeerGridError):
    """A member asked runs a newer member list than ours: retry once we have it."""
