"""What a member answers its peers (``transport.server.Handlers``), and whether the cluster is safe.

The transport server checks every request (cluster name, decodability, sizes,
names) before it reaches these handlers; they hand each to the part of the
member that owns it: membership, the partition manager, the executor, the
event publisher, the maps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from peergrid.cluster.membership import Membership, State
from peergrid.cluster.merge import Merger
from peergrid.config import Timing
from peergrid.errors import PeerGridError
from peergrid.events.model import EventBatch
from peergrid.events.publisher import EventPublisher
from peergrid.member.maps import Maps
from peergrid.member.merging import Merging
from peergrid.owner.executor import Executor
from peergrid.protocol import (
    Chunk,
    Copy,
    HeartbeatReply,
    JoinReply,
    Member,
    MemberList,
    Op,
    RelayedBeat,
    Result,
    Status,
    Terms,
)
from peergrid.replication import PartitionManager
from peergrid.transport import PeerClient


class Answers:
    """One member's handlers of its peers' requests (loop thread)."""

    def __init__(
        self,
        cluster: str,
        uuid: str,
        membership: Callable[[], Membership],
        merger: Callable[[], Merger | None],
        merging: Merging,
        manager: PartitionManager,
        executor: Executor,
        publisher: EventPublisher,
        maps: Maps,
    ) -> None:
        self.cluster = cluster
        self.uuid = uuid
        self._membership = membership  # made once the member is bound
        self._merger = merger
        self._merging = merging
        self._manager = manager
        self._executor = executor
        self._publisher = publisher
        self._maps = maps

    async def join(self, member: Member, terms: Terms, probe: bool) -> JoinReply:
        return await self._membership().handle_join(member, terms, probe)

    def heartbeat(self, uuid: str, list_version: int, list_master: str = "") -> HeartbeatReply:
        return self._membership().handle_heartbeat(uuid, list_version, list_master)

    async def relay(
        self, beats: tuple[RelayedBeat, ...], master: str
    ) -> tuple[list[HeartbeatReply | None], float | None]:
        return await self._membership().handle_relayed(beats, master)

    def publish(self, members: MemberList) -> None:
        self._membership().handle_publish(members)

    def current_members(self) -> MemberList:
        return self._membership().members

    def member_list(self) -> MemberList:
        return self._membership().answer_list()

    async def leave(self, uuid: str, final: bool) -> None:
        await self._membership().handle_leave(uuid, final)

    async def merge(self, into: MemberList) -> None:
        merger = self._merger()
        if merger is not None:
            await merger.handle_merge(into)

    def safe_state(self, merging: bool = False) -> tuple[bool, int, str]:
        """Whether this member has nothing left to do, at which list version, and if not, why.
        Another instance of the cluster answering makes it unsafe, and so does bringing this
        member's data into this instance after joining it, unless ``merging`` (the merge asks
        whether this instance is settled enough to merge with another): a member told to merge
        again while it brings its data carries what it has not brought yet into the next
        instance (``Merging.into``), so its merge need not hold up its instance's. (It could
        hold it for long: into an instance below ``min_cluster_size`` every change it brings is
        refused until its deadline, partition after partition.)"""
        membership = self._membership()
        version = membership.members.version
        if membership.state is not State.ACTIVE:
            return False, version, f"member is {membership.state.value}"
        if self._merging.seeds:
            return False, version, "joining another instance of the cluster to merge into it"
        if self._merging.busy and not merging:
            return False, version, "bringing its data into the instance of the cluster it joined"
        merger = self._merger()
        other = merger.another_instance() if merger is not None and not merging else None
        if other is not None:
            return False, version, f"another instance of the cluster answers at {other}: not merged yet"
        safe, detail = self._manager.safe_state()
        return safe, version, detail

    def frame(
        self, sender: str, table_version: int, ops: list[Op], frame_id: int = 0
    ) -> list[Result | asyncio.Future[Result]]:
        """Each op's result, or the future of one that waits (for its backups, a store, a
        lock's turn). The futures are the operations' own: whoever waits for them must not
        cancel them (a write's dirty-read fence would lift before its backups acked).
        ``frame_id``: the frame's id on its sender's stream (0 for a unary call): a write whose
        sender is its backup may be answered with the copy (``Replicator.replicate``)."""
        membership = self._membership()
        if sender not in membership.members:
            # Not a member here: removed (it learns so soon), not admitted yet (it retries), or a
            # member of another instance of the cluster that shares a uuid with ours after a
            # merge. Nothing it sends is applied: its backups least of all.
            message = f"the sender {sender} is not a member of this member's cluster (yet)"
            return [Result(Status.RETRY, message=message) for _ in ops]
        if table_version < membership.joined_version:
            # Sent before this member (re)joined, to its earlier self: held up in the network (a
            # cut keeps it in TCP retransmission) while its sender's call ended otherwise. Applied
            # now, a lock would be granted to a holder long answered, behind everyone's back.
            message = (
                f"the frame was sent at member list version {table_version}, before this member "
                f"re-joined at {membership.joined_version}"
            )
            return [Result(Status.RETRY, message=message) for _ in ops]
        since = membership.since.get(sender, 0)
        if table_version < since:
            # Sent by the sender's earlier self, before it was removed and admitted again (at
            # ``since``): a lock or unlock its caller gave up on, held up by a cut, would act
            # on what the member holds now. (A live sender stamps its frames with the list that
            # admitted it, or a newer one.)
            message = (
                f"the frame was sent at member list version {table_version}, before its sender "
                f"was admitted again at {since}"
            )
            return [Result(Status.RETRY, message=message) for _ in ops]
        if table_version > membership.members.version:
            membership.saw_version(table_version, membership.address_of(sender))
        execute = self._executor.execute
        if not frame_id:
            return [execute(op, table_version, sender) for op in ops]
        return [execute(op, table_version, sender, frame_id, i) for i, op in enumerate(ops)]

    async def versions(
        self, members: MemberList, partitions: list[int]
    ) -> tuple[int, dict[int, Copy | None]]:
        return await self._manager.handle_versions(members, partitions)

    def fetch(self, members: MemberList, partition: int) -> AsyncIterator[Chunk]:
        return self._manager.handle_fetch(members, partition)

    async def install(self, chunks: AsyncIterator[Chunk]) -> str:
        return await self._manager.handle_install(chunks)

    def release(self, list_version: int, partitions: list[int]) -> None:
        self._manager.handle_release(list_version, partitions)

    def subscribe(
        self, name: str, values: bool, entries: bool, heartbeat_interval: float, peer: str
    ) -> AsyncGenerator[EventBatch, None]:
        return self._publisher.subscribe(name, values, entries, heartbeat_interval, peer)

    def map_stats(self, name: str) -> dict[str, float]:
        return self._maps.local_stats(name).as_dict()  # creates nothing for a map it does not know


async def cluster_safe(
    answers: Answers,
    members: Callable[[], MemberList],
    client: Callable[[str], PeerClient],
    timing: Timing,
    timeout: float,
    merging: bool = False,
) -> bool:
    """Poll every member's safe state until all are safe at one list version (``merging``: the
    merge asks, and another instance of the cluster answering does not count)."""
    deadline = time.monotonic() + timeout
    while True:
        if await _all_safe(answers, members, client, merging):
            return True
        if time.monotonic() + timing.safe_poll_interval > deadline:
            return False
        await asyncio.sleep(timing.safe_poll_interval)


async def _all_safe(
    answers: Answers, members: Callable[[], MemberList], client: Callable[[str], PeerClient], merging: bool
) -> bool:
    safe, version, _ = answers.safe_state(merging)
    if not safe:
        return False

    async def ask(address: str) -> tuple[bool, int, str]:
        try:
            return await client(address).safe_state(merging=merging)
        except PeerGridError as exc:
            return False, 0, str(exc)

    others = [m for m in members().members if m.uuid != answers.uuid]
    states = await asyncio.gather(*(ask(m.address) for m in others))
    return all(ok and v == version for ok, v, _ in states) and members().version == version
