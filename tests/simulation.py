"""peergrid's real membership protocol (``cluster.membership.Membership``) run by hundreds or
thousands of members in one process, on a simulated network, in virtual time.

Every member is a real ``Membership``; only the peers' calls are simulated (``SimPeer``: a
delay each way, random loss, crashed and paused members), and the asyncio loop runs on a
virtual clock that jumps to the next timer when nothing is ready, so a minute of protocol runs
in seconds and the figures do not depend on this machine's speed.

    python -m tests.simulation --members 1000          # report: detection, false positives, messages
    python -m tests.simulation --pauses 200 --min-cluster-size 3   # random pause schedules: where two
                                                       # lineages of the list served one partition

``tests/test_simulation.py`` checks the properties at 100 members (and 1,000 with
``PEERGRID_SOAK=1``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import peergrid.cluster.membership as membership_module
from peergrid.cluster.membership import MAX_HEALTH, Membership, State
from peergrid.config import GridConfig, Timing
from peergrid.errors import PeerGridError, PeerUnavailableError
from peergrid.partition.table import PartitionTable, build_table
from peergrid.protocol import HeartbeatReply, JoinReply, Member, MemberList, RelayedBeat, Terms

T = TypeVar("T")

#: The Jepsen workers' timings (tests/jepsen/runner.py ``default_timing``), as far as membership
#: reads them.
JEPSEN_TIMING = Timing(
    heartbeat_interval=0.2, failure_timeout=1.2, rpc_timeout=1.0, join_timeout=1.0, join_retry_interval=0.1
)


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever no callback is ready."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual = 0.0

    def time(self) -> float:
        return self._virtual

    def _run_once(self) -> None:  # asyncio's private step: advance the clock, then run it
        if not self._ready and self._scheduled:  # type: ignore[attr-defined]
            when = self._scheduled[0]._when  # type: ignore[attr-defined]
            self._virtual = max(self._virtual, when)
        super()._run_once()  # type: ignore[misc]


@dataclass
class Network:
    """Who is reachable, and what each member sent and received."""

    rng: random.Random
    loss: float = 0.0
    delay: tuple[float, float] = (0.0002, 0.002)  # one way, seconds (uniform)
    members: dict[str, Membership] = field(default_factory=dict)  # address -> member
    down: set[str] = field(default_factory=set)  # crashed: never answers again
    paused: set[str] = field(default_factory=set)  # answers nothing until resumed
    # (source, target, call) dropped: a test loses one kind of message between two members.
    blocked: set[tuple[str, str, str]] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)  # address -> seconds it takes to answer
    # (source, target, call) whose requests arrive and are acted on, but whose answers are lost.
    deaf: set[tuple[str, str, str]] = field(default_factory=set)
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)

    def cut(self, address: str) -> bool:
        return address in self.down or address in self.paused

    def lost(self) -> bool:
        return self.loss > 0 and self.rng.random() < self.loss


class SimPeer:
    """``membership.PeerCalls`` to one member over the simulated network."""

    def __init__(self, net: Network, source: str, address: str, timeout: float) -> None:
        self.net, self.source, self.address, self.timeout = net, source, address, timeout

    async def _call(self, timeout: float | None, handle: Callable[[Membership], Any], call: str = "") -> Any:
        net = self.net
        deadline = asyncio.get_running_loop().time() + (timeout or self.timeout)
        net.sent[self.source] += 1
        blocked = (self.source, self.address, call) in net.blocked
        if self.address in net.down and not (blocked or net.cut(self.source) or net.lost()):
            # A crashed process's address refuses connections at once (its kernel answers).
            await asyncio.sleep(net.rng.uniform(*net.delay))
            raise PeerUnavailableError(
                f"peer {self.address} refused the connection (simulated)", address=self.address, refused=True
            )
        if blocked or net.cut(self.source) or net.cut(self.address) or net.lost():
            await _sleep_until(deadline)
            raise PeerUnavailableError(
                f"peer {self.address} is unreachable (simulated)", address=self.address
            )
        await asyncio.sleep(net.rng.uniform(*net.delay) + net.slow.get(self.address, 0.0))
        target = net.members[self.address]
        net.received[self.address] += 1
        result = handle(target)
        if asyncio.iscoroutine(result):
            result = await result
        deaf = (self.source, self.address, call) in net.deaf
        if deaf or net.cut(self.address) or net.cut(self.source) or net.lost():
            await _sleep_until(deadline)
            raise PeerUnavailableError(
                f"peer {self.address} is unreachable (simulated)", address=self.address
            )
        await asyncio.sleep(net.rng.uniform(*net.delay))
        return result

    async def join(
        self,
        member: Member,
        terms: Terms,
        timeout: float | None = None,
        probe: bool = False,
    ) -> JoinReply:
        reply: JoinReply = await self._call(timeout, lambda m: m.handle_join(member, terms, probe), "join")
        return reply

    async def heartbeat(
        self,
        uuid: str,
        list_version: int,
        timeout: float | None = None,
        relayed: tuple[RelayedBeat, ...] = (),
        master: str = "",
        list_master: str = "",
    ) -> HeartbeatReply:
        async def handle(m: Membership) -> HeartbeatReply:
            reply = m.handle_heartbeat(uuid, list_version, list_master)
            answers, relay_in = await m.handle_relayed(relayed, master) if relayed else ([], None)
            return HeartbeatReply(
                reply.status,
                reply.list_version,
                uuid=m.me.uuid,
                leaving=reply.leaving,
                master_heard=reply.master_heard,
                counted=reply.counted,
                relayed=tuple(answers),
                relay_in=relay_in,
            )

        reply: HeartbeatReply = await self._call(timeout, handle)
        return reply

    async def publish(self, members: MemberList, timeout: float | None = None) -> None:
        await self._call(timeout, lambda m: m.handle_publish(members), "publish")

    async def get_members(self, timeout: float | None = None) -> MemberList:
        members: MemberList = await self._call(timeout, lambda m: m.answer_list(), "get_members")
        return members

    async def leave(self, uuid: str, final: bool, timeout: float | None = None) -> None:
        await self._call(timeout, lambda m: m.handle_leave(uuid, final))


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))


@dataclass
class Report:
    """What one simulated run measured (times in heartbeat intervals)."""

    members: int
    joined_at: float  # virtual seconds from the simultaneous start until all agree
    list_versions: int  # versions the master made while they joined
    detection_mean: float  # crash -> each live member's list without it, mean over members
    detection_max: float
    false_removals: int  # live members removed over the idle period (loss, pause)
    pause_removed: bool  # the paused member was removed (its pause outlasted the timeout)
    messages_per_member: float  # calls sent + received per member per interval, idle
    messages_max_non_master: float
    messages_master: float


class Simulation:
    """N members on a ``Network``; drive with ``run(...)`` inside a ``VirtualLoop``."""

    def __init__(
        self,
        n: int,
        seed: int = 1,
        loss: float = 0.0,
        timing: Timing | None = None,
        min_cluster_size: int = 1,
        heartbeat_fanout: int = GridConfig.heartbeat_fanout,
    ) -> None:
        self.n = n
        self.timing = timing or Timing()
        self.config = GridConfig(
            cluster="sim",
            timing=self.timing,
            partition_count=max(271, 2 * n + 1),
            min_cluster_size=min_cluster_size,
            heartbeat_fanout=heartbeat_fanout,
        )
        self.net = Network(random.Random(seed), loss=loss)
        self.rng = random.Random(seed + 1)
        self.removed: list[tuple[float, str, str]] = []  # (time, by address, removed uuid)
        # (time, address, members in the list that dropped it): members that found themselves
        # dropped, and re-joined as new members, leaving their copies behind.
        self.dropped: list[tuple[float, str, int]] = []
        self.uuids: dict[str, str] = {}
        self.exited: list[str] = []  # members that gave up joining, and why
        self._tables: dict[tuple[int, tuple[str, ...]], PartitionTable] = {}  # (``_clashes``)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _member(self, i: int, seeds: list[str]) -> Membership:
        address = f"10.0.{i // 250}.{i % 250}:5701"
        uuid = f"m{i:05d}-{self.rng.getrandbits(32):08x}"  # uuid order = start order, as uuid1 would
        me = Member(uuid, address)
        self.uuids[uuid] = address
        loop = asyncio.get_running_loop()
        holder: list[Membership] = []

        def on_change(old: MemberList, new: MemberList) -> None:
            now = loop.time()
            for gone in set(old.uuids) - set(new.uuids):
                self.removed.append((now, address, gone))

        def on_removed() -> None:
            self._spawn(self._rejoin(holder[0]))

        membership = Membership(
            self.config,
            me,
            lambda peer: SimPeer(self.net, address, peer, self.timing.rpc_timeout),
            on_change,
            on_removed,
            lambda: seeds,
            clock=loop.time,
        )
        holder.append(membership)
        removed = membership._removed

        def dropped(members: MemberList) -> None:
            if membership.state is State.ACTIVE:
                self.dropped.append((loop.time(), address, len(members.members)))
            removed(members)

        membership._removed = dropped  # type: ignore[method-assign]
        self.net.members[address] = membership
        return membership

    async def _rejoin(self, membership: Membership) -> None:
        membership.reset_for_rejoin()
        await membership.join()

    async def _start(self, membership: Membership) -> None:
        try:
            await membership.join()
        except PeerGridError as exc:  # a member that gives up (JoinError) exits, as a process would
            self.exited.append(f"{membership.me.address}: {exc}"[:300])
            self.net.down.add(membership.address)
            return
        membership.start_heartbeats()

    def _live(self) -> list[Membership]:
        return [m for a, m in self.net.members.items() if a not in self.net.down]

    def _agreed(self) -> bool:
        live = self._live()
        want = {m.me.uuid for m in live}
        return all(m.state is State.ACTIVE and set(m.members.uuids) == want for m in live)

    async def _until(self, condition: Callable[[], bool], limit: float) -> float | None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < limit:
            if condition():
                return loop.time() - start
            await asyncio.sleep(self.timing.heartbeat_interval / 10)
        return None

    async def _formed(self) -> list[Membership]:
        """N members with the same three seeds, started together, once they hold one list and
        exchanged their first heartbeats."""
        members = [self._member(i, []) for i in range(self.n)]
        seeds = [m.address for m in members[:3]]
        for m in members:
            m._seeds = lambda: seeds
        for m in members:
            self._spawn(self._start(m))
        if await self._until(self._agreed, 600.0) is None or self.exited:
            raise AssertionError(f"{self.n} members did not form one cluster: {self.exited[:1]}")
        await asyncio.sleep(5 * self.timing.heartbeat_interval)
        return members

    async def _stop(self, members: list[Membership]) -> None:
        for m in members:
            await m.stop()
        for task in list(self._tasks):
            task.cancel()

    async def run(self, idle: float = 60.0, pause: float | None = None) -> Report:
        """Start all together, idle (with loss), pause one member, crash one; measure."""
        loop = asyncio.get_running_loop()
        interval = self.timing.heartbeat_interval
        members = [self._member(i, []) for i in range(self.n)]
        seeds = [m.address for m in members[:3]]
        for m in members:
            m._seeds = lambda: seeds  # the same three seeds for everyone
        for m in members:
            self._spawn(self._start(m))
        joined_at = await self._until(self._agreed, 600.0)
        if self.exited:
            raise AssertionError(f"{len(self.exited)} members gave up joining, e.g. {self.exited[0]}")
        if joined_at is None:
            raise AssertionError(f"{self.n} members did not agree on one list within 600 s (virtual)")
        versions = members[0].members.version
        await asyncio.sleep(5 * interval)  # settle: joins published, first heartbeats exchanged

        # Idle, with the network's loss: count messages and removals.
        self.net.sent.clear()
        self.net.received.clear()
        before = len(self.removed)
        await asyncio.sleep(idle)
        master_uuid = members[0].members.master_uuid
        master_address = self.uuids[master_uuid]
        per = {a: (self.net.sent[a] + self.net.received[a]) / (idle / interval) for a in self.net.members}
        non_master = [v for a, v in per.items() if a != master_address]

        # A pause shorter than the failure timeout must not remove anyone; a longer one removes
        # only the paused member.
        pause = self.timing.failure_timeout / 2 if pause is None else pause
        victim = members[-1]
        self._pause(victim, True)
        await asyncio.sleep(pause)
        self._pause(victim, False, stalled=pause)
        await asyncio.sleep(3 * interval)
        pause_removed = any(u == victim.me.uuid for _, _, u in self.removed[before:])
        false_removals = sum(1 for _, _, u in self.removed[before:] if u != victim.me.uuid)

        # A crash: when does each live member's list drop it?
        crashed = members[-2]
        await crashed.stop()
        self.net.down.add(crashed.address)
        crashed_at = loop.time()
        mark = len(self.removed)
        await self._until(
            lambda: all(crashed.me.uuid not in m.members for m in self._live()),
            60 * self.timing.failure_timeout,
        )
        seen: dict[str, float] = {}
        for when, by, uuid in self.removed[mark:]:
            if uuid == crashed.me.uuid:
                seen.setdefault(by, when - crashed_at)
        detections = [seen.get(m.address, float("inf")) / interval for m in self._live()]
        await self._stop(members)
        return Report(
            members=self.n,
            joined_at=joined_at,
            list_versions=versions,
            detection_mean=statistics.fmean(detections),
            detection_max=max(detections),
            false_removals=false_removals,
            pause_removed=pause_removed,
            messages_per_member=statistics.fmean(per.values()),
            messages_max_non_master=max(non_master),
            messages_master=per[master_address],
        )

    async def takeover_race(self, query_lost: bool = False) -> tuple[float | None, list[str]]:
        """The next oldest member crashes; the master removes it, and its new list reaches every
        member but the third oldest before the master crashes too: the third oldest takes over.
        Returns how long until every live member holds one list of them all (None: never, within a minute of
        failure timeouts), and the live members removed on the way. ``query_lost``: the taker's
        calls asking the others for their lists are lost too, until it has taken over."""
        members = await self._formed()
        by_uuid = {m.me.uuid: m for m in members}
        order = members[0].members.uuids
        master, victim, taker = by_uuid[order[0]], by_uuid[order[1]], by_uuid[order[2]]
        # The master's publications to the taker are lost, and so are the taker's pulls.
        self.net.blocked.add((master.address, taker.address, "publish"))
        self.net.blocked.add((taker.address, master.address, "get_members"))
        if query_lost:
            self.net.blocked.update((taker.address, m.address, "get_members") for m in members)
        version = master.members.version
        await victim.stop()
        self.net.down.add(victim.address)
        published = await self._until(
            lambda: all(m.members.version > version for m in self._live() if m is not taker),
            60 * self.timing.failure_timeout,
        )
        if published is None or taker.members.version != version:
            raise AssertionError("the master's list did not reach the others only")
        await master.stop()
        self.net.down.add(master.address)
        mark = len(self.removed)
        if query_lost:  # lost while the taker takes over, not for ever
            await self._until(lambda: taker.is_master, 60 * self.timing.failure_timeout)
            self.net.blocked -= {(taker.address, m.address, "get_members") for m in members}
        agreed = await self._until(self._agreed, 60 * self.timing.failure_timeout)
        live = {m.me.uuid for m in self._live()}
        removed = [self.uuids[u] for _, _, u in self.removed[mark:] if u in live]
        await self._stop(members)
        return agreed, removed

    async def master_cut_from_one(self, duration: float) -> tuple[set[str], list[str]]:
        """Every call between the master and the next oldest member is lost, both ways, for
        ``duration`` seconds; the rest of the network is whole. Returns the masters the members
        (the cut-off one too) followed meanwhile (sampled every tenth of a heartbeat), and the
        members removed other than the cut-off one (by any but the cut-off one)."""
        members = await self._formed()
        by_uuid = {m.me.uuid: m for m in members}
        order = members[0].members.uuids
        master, cut = by_uuid[order[0]], by_uuid[order[1]]
        self.net.blocked.update({(master.address, cut.address, ""), (cut.address, master.address, "")})
        mark = len(self.removed)
        masters: set[str] = set()
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        while loop.time() < end:
            masters.update(m.members.master_uuid for m in members if m.state is State.ACTIVE)
            await asyncio.sleep(self.timing.heartbeat_interval / 10)
        removed = [
            self.uuids[u] for _, by, u in self.removed[mark:] if cut.address not in (by, self.uuids[u])
        ]
        await self._stop(members)
        return {self.uuids[u] for u in masters}, removed

    async def master_isolated(self, duration: float) -> tuple[list[str], float | None]:
        """Every call to and from the master is lost for ``duration`` seconds (its loop runs
        on, as an overloaded or cut-off master's does). Returns the members the master removed
        meanwhile, and how long after the heal every member held one list (None: not within a
        hundred failure timeouts; merges of two instances are not simulated)."""
        members = await self._formed()
        master = next(m for m in members if m.is_master)
        mark = len(self.removed)
        self.net.paused.add(master.address)
        await asyncio.sleep(duration)
        removed = [self.uuids[u] for _, by, u in self.removed[mark:] if by == master.address]
        self.net.paused.discard(master.address)
        agreed = await self._until(self._agreed, 100 * self.timing.failure_timeout)
        await self._stop(members)
        return removed, agreed

    async def two_fail(self, paused: bool) -> list[float]:
        """Two members other than the master fail at once: crash (their addresses refuse
        connections) or, with ``paused``, stop answering (as starved or paused processes do).
        Returns how long after the failure the master removed each (inf: not within 20 failure
        timeouts)."""
        members = await self._formed()
        master = next(m for m in members if m.is_master)
        victims = [m for m in members if m is not master][-2:]
        loop = asyncio.get_running_loop()
        mark, failed_at = len(self.removed), loop.time()
        for victim in victims:
            if paused:
                self.net.paused.add(victim.address)
            else:
                await victim.stop()
                self.net.down.add(victim.address)
        uuids = {v.me.uuid for v in victims}
        await self._until(lambda: not uuids & set(master.members.uuids), 20 * self.timing.failure_timeout)
        removed = {u: when - failed_at for when, by, u in self.removed[mark:] if by == master.address}
        await self._stop(members)
        return [removed.get(u, float("inf")) for u in sorted(uuids)]

    async def majority_lost(self, crashed: bool, duration: float) -> dict[str, Any]:
        """All members but the master and one other crash (their addresses refuse connections)
        or, unless ``crashed``, pause for ``duration`` seconds; meanwhile a new member tries to
        join. Returns what happened: the members the master removed, whether it counted a
        quorum and whether the joiner was admitted while they were away, the members dropped
        (``dropped``), and whether all live members agreed on one list after they came back."""
        members = await self._formed()
        master = next(m for m in members if m.is_master)
        away = [m for m in members if m is not master][1:]
        loop = asyncio.get_running_loop()
        mark = len(self.removed)
        for member in away:
            if crashed:
                await member.stop()
                self.net.down.add(member.address)
            else:
                self._pause(member, True)
        start = loop.time()
        await asyncio.sleep(2 * (self.timing.failure_timeout + MAX_HEALTH * self.timing.heartbeat_interval))
        joiner = self._member(self.n, [])
        joiner._seeds = lambda: [master.address]
        self._spawn(self._start(joiner))
        left = max(0.0, start + duration - loop.time())
        joined_away = await self._until(lambda: joiner.state is State.ACTIVE, left)
        quorum = master.has_quorum()
        if not crashed:
            for member in away:
                self._pause(member, False, stalled=loop.time() - start)
        agreed = await self._until(self._agreed, 10 * self.timing.failure_timeout)
        removed = sorted(self.uuids[u] for _, by, u in self.removed[mark:] if by == master.address)
        await self._stop([*members, joiner])
        return {
            "removed": removed,
            "away": sorted(m.address for m in away),
            "quorum while away": quorum,
            "joined while away": joined_away is not None,
            "dropped": [a for _, a, _ in self.dropped],
            "agreed": agreed is not None,
        }

    async def member_isolated(self, duration: float) -> list[str]:
        """Every call to and from the second youngest member is lost for ``duration`` seconds
        (its loop runs on, as a starved or cut-off member's does): to it, the master and every
        older member fall silent, and so does the youngest, which it would ask whether it hears
        the master. Returns the members it removed meanwhile."""
        members = await self._formed()
        youngest = next(m for m in members if m.me.uuid == members[0].members.uuids[-2])
        mark = len(self.removed)
        self.net.paused.add(youngest.address)
        await asyncio.sleep(duration)
        removed = [self.uuids[u] for _, by, u in self.removed[mark:] if by == youngest.address]
        self.net.paused.discard(youngest.address)
        await self._stop(members)
        return removed

    async def relay_fault(self, fault: str) -> tuple[list[str], str]:
        """A relay with children and grandchildren (the master's first child) is killed, or
        paused for half the failure timeout; then ten failure timeouts pass. Returns the
        addresses of the members removed meanwhile (by anyone), and the relay's."""
        members = await self._formed()
        uuids = members[0].members.uuids
        relay = next(m for m in members if m.me.uuid == uuids[1])
        assert any(m._relay.parent == relay.me.uuid for m in members), "the relay relays for no one"
        mark = len(self.removed)
        if fault == "kill":
            await relay.stop()
            self.net.down.add(relay.address)
        else:
            self._pause(relay, True)
            await asyncio.sleep(self.timing.failure_timeout / 2)
            self._pause(relay, False, stalled=self.timing.failure_timeout / 2)
        await asyncio.sleep(10 * self.timing.failure_timeout)
        removed = sorted({self.uuids[u] for _, _, u in self.removed[mark:]})
        await self._stop(members)
        return removed, relay.address

    async def slow_master(self, delay: float, duration: float) -> tuple[float, list[str]]:
        """The master answers every call ``delay`` seconds late (an overloaded process) for
        ``duration`` seconds. Returns the messages it received per heartbeat interval meanwhile,
        and the addresses of the members removed (by anyone) until ten failure timeouts after."""
        members = await self._formed()
        await asyncio.sleep(self.timing.failure_timeout)  # relays settled
        master = next(m for m in members if m.is_master)
        mark = len(self.removed)
        self.net.slow[master.address] = delay
        await asyncio.sleep(duration / 2)  # (the first half: moving to the slow regime)
        self.net.received.clear()
        await asyncio.sleep(duration / 2)
        received = self.net.received[master.address] / (duration / 2 / self.timing.heartbeat_interval)
        del self.net.slow[master.address]
        await asyncio.sleep(10 * self.timing.failure_timeout)
        removed = sorted({self.uuids[u] for _, _, u in self.removed[mark:]})
        await self._stop(members)
        return received, removed

    async def admission_unanswered(self, lost_for: float) -> tuple[list[str], float | None]:
        """A member joins a formed cluster, and for ``lost_for`` seconds the master's answers to
        its join calls are lost (the master admits it; a busy master's answers time out; the
        other seeds answer "ask the master"). Returns the addresses removed meanwhile (by
        anyone), and when the joiner joined (None: not within ten failure timeouts after)."""
        members = await self._formed()
        master = next(m for m in members if m.is_master)
        joiner = self._member(self.n, [])
        joiner._seeds = lambda: [m.address for m in members[:3]]
        loop = asyncio.get_running_loop()
        start, mark = loop.time(), len(self.removed)
        self.net.deaf.add((joiner.address, master.address, "join"))
        self._spawn(self._start(joiner))
        joined = await self._until(lambda: joiner.state is State.ACTIVE, lost_for)
        self.net.deaf.clear()
        if joined is None:
            joined = await self._until(lambda: joiner.state is State.ACTIVE, 10 * self.timing.failure_timeout)
        await asyncio.sleep(3 * self.timing.failure_timeout)
        removed = sorted({self.uuids[u] for _, _, u in self.removed[mark:]})
        await self._stop([*members, joiner])
        return removed, None if joined is None else loop.time() - start

    async def split(
        self, minority: int, duration: float, late: bool = False
    ) -> tuple[list[tuple[float, list[str]]], list[tuple[float, str, int]], list[str]]:
        """The master and ``minority - 1`` other members cannot reach the rest, both ways, for
        ``duration`` seconds; then the network heals. Returns the moments (sampled every tenth of
        a heartbeat, until ten failure timeouts after the heal) at which members following
        different masters both served (held an owner lease and a quorum), with those masters;
        and the members of the larger side dropped meanwhile (``dropped``: when, which, the size
        of the list that dropped it); and the members of the smaller side that still counted a
        quorum (``has_quorum``) just before the heal. ``late``: one member of the larger side
        gets the list of the member that takes over there only after the heal."""
        members = await self._formed()
        master = next(m for m in members if m.is_master)
        others = [m for m in members if m is not master]
        small = {master.address, *(m.address for m in self.rng.sample(others, minority - 1))}
        large = {m.address for m in members} - small
        cut = {(a, b, call) for a in small for b in large for call in ("", "publish", "get_members")}
        cut |= {(b, a, call) for a, b, call in cut}
        if late:
            # One member of the larger side misses the list of the member taking over there
            # until the heal (its publication and the pulls are lost), as a loaded member may.
            taker = min(large, key=lambda a: next(m.me.uuid for m in members if m.address == a))
            slow = self.rng.choice(sorted(large - {taker}))
            cut |= {(a, slow, "publish") for a in large} | {(slow, a, "get_members") for a in large}
        # One member of the larger side is cut off a heartbeat earlier: the master, which then
        # hears three of four, removes it alone and keeps a list of min_cluster_size members.
        first = self.rng.choice(sorted(large))
        early = {(a, b, c) for a, b, c in cut if first in (a, b) and {a, b} & small}
        loop = asyncio.get_running_loop()
        forks: list[tuple[float, list[str]]] = []
        quorate: list[str] = []
        start = loop.time()
        end = start + duration + 10 * self.timing.failure_timeout
        while loop.time() < end:
            elapsed = loop.time() - start
            if duration - self.timing.heartbeat_interval / 10 <= elapsed < duration:
                quorate = [m.address for m in members if m.address in small and m.has_quorum()]
            if elapsed < duration:
                self.net.blocked |= cut if elapsed >= 2 * self.timing.heartbeat_interval else early
            else:
                self.net.blocked -= cut
            serving = self._serving(members)
            if len(serving) > 1:
                forks.append((loop.time() - start, serving))
            await asyncio.sleep(self.timing.heartbeat_interval / 10)
        await self._stop(members)
        dropped = [(t - start, a, size) for t, a, size in self.dropped if t >= start and a in large]
        return forks, dropped, quorate

    async def split_kill(
        self, duration: float, kill_at: float | None = None, schedule: random.Random | None = None
    ) -> tuple[list[str], list[tuple[float, list[str]]]]:
        """The master and two others (the larger side) cannot reach the other two for
        ``duration`` seconds, one of the two cut off a few heartbeats before the other; the
        master crashes ``kill_at`` seconds in (None: as soon as its list drops the first of the
        two), its address refusing from then on; then the network heals. Returns the live
        members still active in a list whose master is dead ten failure timeouts after the
        heal: left without a master (this simulation has no merge: the two sides' lineages
        stay apart, but each live member must follow a live master); and, as ``split``, the
        moments at which members following different masters both served.

        ``schedule`` (a seeded generator) draws another instead: sides of ``(n - 1) // 2``
        members and the rest, the master on either; any member killed, 0.5-6 s in; a split of
        2-8 s, whose first member is cut off 0-0.8 s before the others."""
        members = await self._formed()
        master = next(m for m in members if m.is_master)
        if schedule is None:
            small = [m.address for m in self.rng.sample([m for m in members if m is not master], 2)]
            first, victim, lead = small[0], master, 4 * self.timing.heartbeat_interval
        else:
            order = list(range(len(members)))
            schedule.shuffle(order)
            small = [members[i].address for i in order[: (len(members) - 1) // 2]]
            victim = schedule.choice(members)
            kill_at = schedule.uniform(0.5, 6.0)
            duration = schedule.uniform(2.0, 8.0)
            lead = schedule.choice([0.0, 0.4, 0.8])
            first = schedule.choice(sorted(small))
        large = {m.address for m in members} - set(small)
        cut = {(a, b, call) for a in small for b in large for call in ("", "publish", "get_members")}
        cut |= {(b, a, call) for a, b, call in cut}
        early = {(a, b, c) for a, b, c in cut if first in (a, b)}
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + duration + 10 * self.timing.failure_timeout
        forks: list[tuple[float, list[str]]] = []
        while loop.time() < end:
            elapsed = loop.time() - start
            if elapsed < duration:
                self.net.blocked |= cut if elapsed >= lead else early
            else:
                self.net.blocked -= cut
            dropped = self.uuids_at(first) not in victim.members
            if victim.address not in self.net.down and (
                elapsed >= kill_at if kill_at is not None else dropped
            ):
                self.net.down.add(victim.address)
                if victim._ticker is not None:
                    victim._ticker.cancel()
                    victim._ticker = None
            serving = self._serving([m for m in members if m.address not in self.net.down])
            if len(serving) > 1:
                forks.append((loop.time() - start, serving))
            await asyncio.sleep(self.timing.heartbeat_interval / 10)
        dead = {m.me.uuid for m in members if m.address in self.net.down}
        limbo = [
            m.address
            for m in members
            if m.address not in self.net.down and m.state is State.ACTIVE and m.members.master_uuid in dead
        ]
        await self._stop(members)
        return limbo, forks

    def uuids_at(self, address: str) -> str:
        """The uuid of the member at ``address``."""
        return self.net.members[address].me.uuid

    def _serving(self, members: list[Membership]) -> list[str]:
        """The masters (addresses) of the members that serve now: active, holding an owner
        lease and a quorum. More than one: two owners may serve one partition."""
        return sorted(
            {
                self.uuids[m.members.master_uuid]
                for m in members
                if m.address not in self.net.paused
                and m.state is State.ACTIVE
                and m.holds_lease()
                and m.has_quorum()
            }
        )

    async def takeover_not_taken_up(
        self, duration: float, taken_up_by: int = 0
    ) -> tuple[list[tuple[float, list[str]]], list[float], bool, list[tuple[float, int]]]:
        """The master pauses for ``duration`` seconds; the next oldest takes over, but the others
        (all but ``taken_up_by`` of them) never take its list up (its publications, and their
        calls for its list, are lost, as when their confirmation is slow and the master comes
        back first): they stay with the master. Returns the moments (sampled every tenth of a
        heartbeat, until twenty failure timeouts after the pause began) at which members
        following different masters both served, with those masters; the moments at which a
        member was master of a list of itself alone; whether every member held one list at the
        end; and the moments at which two of them both served a partition (``_clashes``: when,
        how many partitions)."""
        members = await self._formed()
        by_uuid = {m.me.uuid: m for m in members}
        order = members[0].members.uuids
        master, taker = by_uuid[order[0]], by_uuid[order[1]]
        others = [m for m in members if m not in (master, taker)][taken_up_by:]
        self.net.blocked |= {(taker.address, o.address, "publish") for o in others}
        self.net.blocked |= {(o.address, taker.address, "get_members") for o in others}
        loop = asyncio.get_running_loop()
        forks: list[tuple[float, list[str]]] = []
        alone: list[float] = []
        clashes: list[tuple[float, int]] = []
        start = loop.time()
        self._pause(master, True)
        while loop.time() < start + 20 * self.timing.failure_timeout:
            elapsed = loop.time() - start
            if elapsed >= duration and master.address in self.net.paused:
                self._pause(master, False, stalled=elapsed)
            serving = self._serving(members)
            if len(serving) > 1:
                forks.append((elapsed, serving))
            if any(m.state is State.ACTIVE and m.is_master and len(m.members.members) == 1 for m in members):
                alone.append(elapsed)
            found = self._clashes(members)
            if found:
                clashes.append((elapsed, len(found)))
            await asyncio.sleep(self.timing.heartbeat_interval / 10)
        agreed = self._agreed()
        await self._stop(members)
        return forks, alone, agreed, clashes

    def _clashes(self, members: list[Membership]) -> list[int]:
        """Partitions that two serving members (``_serving``'s test) following different
        masters would both own, each by the table of its own list. An over-approximation: a
        new owner also waits, before it serves a partition, for the leases of the copies it
        asks about (not simulated here)."""
        owners: dict[int, Membership] = {}
        clashes: list[int] = []
        for m in members:
            if m.address in self.net.paused or m.state is not State.ACTIVE or not m.holds_lease():
                continue
            if not m.has_quorum():
                continue
            key = (m.members.version, m.members.uuids)
            table = self._tables.get(key)
            if table is None:
                table = self._tables[key] = build_table(
                    m.members.version, m.members.placement(), self.config.partition_count, 2, 64
                )
            for p in table.owned_by(m.me.uuid):
                other = owners.setdefault(p, m)
                if other.members.master_uuid != m.members.master_uuid:
                    clashes.append(p)
        return clashes

    async def random_pauses(
        self, faults: int, rng: random.Random
    ) -> tuple[list[tuple[float, int]], float | None]:
        """``faults`` pauses (SIGSTOP) one after another, each of the master, of any member,
        or of two members at once, for 1-3.5 s, with 0.5-2.5 s between them. Returns the
        moments (sampled every tenth of a heartbeat) at which two members following different
        masters both served a partition (``_clashes``: when, how many partitions), and how
        long after the last pause every member held one list (None: not within forty failure
        timeouts)."""
        members = await self._formed()
        loop = asyncio.get_running_loop()
        start = loop.time()
        clashes: list[tuple[float, int]] = []

        async def watch(seconds: float) -> None:
            end = loop.time() + seconds
            while loop.time() < end:
                found = self._clashes(members)
                if found:
                    clashes.append((loop.time() - start, len(found)))
                await asyncio.sleep(self.timing.heartbeat_interval / 10)

        for _ in range(faults):
            kind = rng.choice(["master", "master", "any", "two"])
            master = next((m for m in members if m.is_master and m.state is State.ACTIVE), members[0])
            victims = [master] if kind == "master" else rng.sample(members, 1 if kind == "any" else 2)
            paused = rng.uniform(1.0, 3.5)
            for victim in victims:
                self._pause(victim, True)
            await watch(paused)
            for victim in victims:
                self._pause(victim, False, stalled=paused)
            await watch(rng.uniform(0.5, 2.5))
        agreed = await self._until(self._agreed, 40 * self.timing.failure_timeout)
        await watch(1.0)
        await self._stop(members)
        return clashes, agreed

    async def master_leaves(self) -> float | None:
        """The master leaves gracefully; its final list (naming the next oldest master) reaches
        every member but the next oldest, and the master exits before that one could confirm it
        with it. Returns how long until every live member holds one list (None: not within 30
        failure timeouts)."""
        members = await self._formed()
        master = next(m for m in members if m.is_master)
        heir = self.net.members[self.uuids[master.members.uuids[1]]]
        # Its publication to the heir is lost, and so are the heir's questions to it (as when
        # it exits before they arrive).
        self.net.blocked |= {
            (master.address, heir.address, "publish"),
            (heir.address, master.address, "get_members"),
        }
        await master.request_leave(final=True)
        # The others confirm it with the master while it still runs; then it exits.
        await self._until(
            lambda: all(m.members.master_uuid == heir.me.uuid for m in members if m not in (master, heir)),
            10 * self.timing.failure_timeout,
        )
        await master.stop()
        self.net.down.add(master.address)
        agreed = await self._until(self._agreed, 30 * self.timing.failure_timeout)
        await self._stop(members)
        return agreed

    async def staggered_start(self, stagger: float) -> tuple[int, float | None]:
        """Every member starts within ``stagger`` seconds of the first, in random order, with
        random uuids (uuid4: a member that starts late may have the lowest); three seeds, as
        ``run``. Returns how many members formed a cluster, and when all held one list (None:
        not within 600 virtual seconds; two formations never agree, merges are not simulated)."""
        members = [self._member(i, []) for i in range(self.n)]
        seeds = [m.address for m in members[:3]]
        formed: list[str] = []
        for m in members:
            m._seeds = lambda: seeds
            m.me = Member(f"{self.rng.getrandbits(64):016x}", m.me.address)
            self.uuids[m.me.uuid] = m.me.address
            form = m.form

            def counted(form: Callable[[], None] = form, address: str = m.address) -> None:
                formed.append(address)
                form()

            m.form = counted  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        for m in members:
            loop.call_later(self.rng.uniform(0.0, stagger), self._spawn, self._start(m))
        agreed = await self._until(lambda: len(self._live()) == self.n and self._agreed(), 600.0)
        await self._stop(members)
        return len(formed), agreed

    def _pause(self, member: Membership, paused: bool, stalled: float = 0.0) -> None:
        """SIGSTOP / SIGCONT, as the member sees it: nothing in or out, no tick, and on resuming
        a tick that finds its loop ``stalled`` seconds late."""
        if paused:
            self.net.paused.add(member.address)
            if member._ticker is not None:
                member._ticker.cancel()
                member._ticker = None
            return
        self.net.paused.discard(member.address)
        if stalled > max(self.timing.heartbeat_interval, self.timing.failure_timeout / 4):
            member._stalled(stalled, asyncio.get_running_loop().time())
        member.start_heartbeats()


def run_virtual(run: Coroutine[Any, Any, T]) -> T:
    """Run ``run`` to its end in a fresh ``VirtualLoop`` (virtual time: sleeps take none)."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(run)
    finally:
        loop.close()


def _virtual(seed: int, run: Coroutine[Any, Any, T]) -> T:
    """Run ``run`` to its end in a ``VirtualLoop``, with Python's random seeded first (the
    members' own random choices, such as their probe rotation, are seeded too: membership
    draws from a generator of its own, seeded here as well)."""
    random.seed(seed)
    membership_module._random.seed(seed)
    return run_virtual(run)


def simulate(
    n: int, seed: int = 1, loss: float = 0.0, idle: float = 60.0, timing: Timing | None = None
) -> Report:
    """Run one simulation to its report (the same for the same arguments: the members' own
    random choices, such as their probe rotation, are seeded too)."""
    return _virtual(seed, Simulation(n, seed, loss, timing).run(idle=idle))


def takeover_race(
    n: int, seed: int = 1, timing: Timing | None = None, query_lost: bool = False
) -> tuple[float | None, list[str]]:
    """Run ``Simulation.takeover_race`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0, timing).takeover_race(query_lost))


def staggered_start(
    n: int, stagger: float, seed: int = 1, timing: Timing | None = None
) -> tuple[int, float | None]:
    """Run ``Simulation.staggered_start`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0, timing).staggered_start(stagger))


def master_cut_from_one(
    n: int, seed: int = 1, duration: float = 60.0, timing: Timing | None = None
) -> tuple[set[str], list[str]]:
    """Run ``Simulation.master_cut_from_one`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0, timing).master_cut_from_one(duration))


def split(
    n: int,
    minority: int,
    duration: float,
    min_cluster_size: int,
    seed: int = 1,
    timing: Timing | None = None,
    late: bool = False,
) -> tuple[list[tuple[float, list[str]]], list[tuple[float, str, int]], list[str]]:
    """Run ``Simulation.split`` (seeded, as ``simulate``)."""
    sim = Simulation(n, seed, 0.0, timing, min_cluster_size)
    return _virtual(seed, sim.split(minority, duration, late))


def split_kill(
    n: int,
    duration: float,
    kill_at: float | None,
    min_cluster_size: int,
    seed: int = 1,
    timing: Timing | None = None,
) -> tuple[list[str], list[tuple[float, list[str]]]]:
    """Run ``Simulation.split_kill`` (seeded, as ``simulate``)."""
    sim = Simulation(n, seed, 0.0, timing, min_cluster_size)
    return _virtual(seed, sim.split_kill(duration, kill_at))


def random_split_kills(
    seeds: range | tuple[int, ...], n: int, min_cluster_size: int, timing: Timing | None = None
) -> list[tuple[int, list[str], list[tuple[float, list[str]]]]]:
    """``Simulation.split_kill`` of ``n`` members on a random schedule, once per seed:
    (seed, limbo, forks) of each."""
    runs = []
    for seed in seeds:
        sim = Simulation(n, seed, 0.0, timing or JEPSEN_TIMING, min_cluster_size)
        limbo, forks = _virtual(seed, sim.split_kill(0.0, schedule=random.Random(seed * 7919)))
        runs.append((seed, limbo, forks))
    return runs


def takeover_not_taken_up(
    n: int,
    duration: float,
    seed: int = 1,
    timing: Timing | None = None,
    min_cluster_size: int = 1,
    taken_up_by: int = 0,
) -> tuple[list[tuple[float, list[str]]], list[float], bool, list[tuple[float, int]]]:
    """Run ``Simulation.takeover_not_taken_up`` (seeded, as ``simulate``)."""
    sim = Simulation(n, seed, 0.0, timing, min_cluster_size)
    return _virtual(seed, sim.takeover_not_taken_up(duration, taken_up_by))


def random_pauses(
    seeds: range, min_cluster_size: int, faults: int = 3, timing: Timing | None = None
) -> list[tuple[int, float, str, list[tuple[float, int]], float | None]]:
    """``Simulation.random_pauses`` of five members, once per seed, each with its own message
    loss (0-3 %) and delay (up to 2, 20 or 100 ms each way): (seed, loss, delay, clashes,
    agreed) of each."""
    timing = timing or JEPSEN_TIMING
    runs = []
    for seed in seeds:
        rng = random.Random(seed * 7919)
        sim = Simulation(5, seed, rng.choice([0.0, 0.0, 0.01, 0.03]), timing, min_cluster_size)
        sim.net.delay = (0.0002, rng.choice([0.002, 0.02, 0.1]))
        clashes, agreed = _virtual(seed, sim.random_pauses(faults, rng))
        runs.append((seed, sim.net.loss, f"{sim.net.delay[1] * 1000:.0f} ms", clashes, agreed))
    return runs


def two_fail(n: int, paused: bool, seed: int = 1, timing: Timing | None = None) -> list[float]:
    """Run ``Simulation.two_fail`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0, timing).two_fail(paused))


def relay_faults(n: int, fanout: int, fault: str, seed: int = 1) -> tuple[list[str], str]:
    """Run ``Simulation.relay_fault`` with heartbeat relays of ``fanout`` (seeded)."""
    return _virtual(seed, Simulation(n, seed, 0.0, heartbeat_fanout=fanout).relay_fault(fault))


def slow_master(n: int, fanout: int, delay: float, duration: float, seed: int = 1) -> tuple[float, list[str]]:
    """Run ``Simulation.slow_master`` with heartbeat relays of ``fanout`` (seeded)."""
    return _virtual(seed, Simulation(n, seed, 0.0, heartbeat_fanout=fanout).slow_master(delay, duration))


def admission_unanswered(n: int, lost_for: float, seed: int = 1) -> tuple[list[str], float | None]:
    """Run ``Simulation.admission_unanswered`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0).admission_unanswered(lost_for))


def majority_lost(
    crashed: bool, duration: float, seed: int = 1, timing: Timing | None = None
) -> dict[str, Any]:
    """Run ``Simulation.majority_lost`` with five members and min_cluster_size=3 (seeded)."""
    return _virtual(seed, Simulation(5, seed, 0.0, timing, 3).majority_lost(crashed, duration))


def member_isolated(n: int, duration: float, seed: int = 1, timing: Timing | None = None) -> list[str]:
    """Run ``Simulation.member_isolated`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0, timing).member_isolated(duration))


def master_leaves(n: int, seed: int = 1, timing: Timing | None = None) -> float | None:
    """Run ``Simulation.master_leaves`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0, timing).master_leaves())


def master_isolated(
    n: int, duration: float, seed: int = 1, timing: Timing | None = None
) -> tuple[list[str], float | None]:
    """Run ``Simulation.master_isolated`` (seeded, as ``simulate``)."""
    return _virtual(seed, Simulation(n, seed, 0.0, timing).master_isolated(duration))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", default="100,1000", help="comma-separated sizes (default 100,1000)")
    parser.add_argument("--loss", type=float, default=0.01, help="message loss, each way (default 0.01)")
    parser.add_argument("--idle", type=float, default=60.0, help="virtual seconds of idle measurement")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pauses",
        type=int,
        default=0,
        help="instead: this many random pause schedules of five members (seeds from --seed), "
        "reporting those where two lineages served one partition, or no one list formed",
    )
    parser.add_argument("--min-cluster-size", type=int, default=1, help="with --pauses (default 1)")
    args = parser.parse_args(argv)
    logging.getLogger("peergrid").setLevel(logging.ERROR)
    if args.pauses:
        logging.disable(logging.CRITICAL)
        runs = random_pauses(range(args.seed, args.seed + args.pauses), args.min_cluster_size)
        bad = [r for r in runs if r[3] or r[4] is None]
        for seed, loss, delay, clashes, agreed in bad:
            first = f"first at {clashes[0][0]:.2f}s, {clashes[0][1]} partitions" if clashes else "none"
            print(
                f"seed {seed} (loss {loss}, delay <= {delay}): "
                f"{len(clashes)} samples with a clash ({first}); "
                f"one list {'never' if agreed is None else f'{agreed:.1f}s after'}"
            )
        print(
            f"{len(bad)} of {len(runs)} schedules with a clash or no one list (min_cluster_size "
            f"{args.min_cluster_size})"
        )
        return 0
    print(
        "| members | joined (s) | list versions at join | crash detected, mean / max (intervals) | "
        "false removals | messages per member per interval: mean / max non-master / master |"
    )
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in args.members.split(",")):
        r = simulate(n, args.seed, args.loss, args.idle)
        print(
            f"| {r.members} | {r.joined_at:.1f} | {r.list_versions} | {r.detection_mean:.2f} / "
            f"{r.detection_max:.2f} | {r.false_removals} | {r.messages_per_member:.2f} / "
            f"{r.messages_max_non_master:.2f} / {r.messages_master:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
