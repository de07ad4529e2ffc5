"""Merging two instances of one cluster: the smaller joins the larger.

Members that start at the same moment without seeing each other yet (mDNS
takes a second or two), or the two sides of a network that heals, can form
two clusters of the same name. Every ``timing.discovery_interval`` the master
of each instance asks the addresses it knows of that are not members (peers
found by mDNS, static seeds) for their member list. A list with a master and
no member in common with ours is another instance of our cluster, and one
rule, which both sides compute alike, picks the survivor: the instance with
fewer members merges into the other; on a tie, the one whose master has the
larger uuid. One exception: an instance whose master lost its quorum for good
(with ``min_cluster_size``, its list fell below that by removing members that
went on in another lineage: ``Membership.lost_quorum``) admits no one, so it
merges into the other whatever their sizes, and never asks the other to merge
into it. When both lost their quorum (each dropped, after the heal, members
that went on in the other), the other merges into the one whose master served
last (``outlived``): that one holds the latest acknowledged writes, some of
them perhaps unjournaled, and admits again for it (``Membership.outlive``);
the other's members bring theirs, journaled, as in any merge. Each master's
list answer says when it last served and whether it lost its quorum
(``MemberList.served_at``, ``quorum_lost``).

Merging is a re-join. The merging master tells its members (the surviving
master tells the merging one, which may not know of it); each member checks
the rule itself against the list the other instance gives it, asks the other
master whether it would be admitted (a join "probe": same partition count and
serializer, reachable at its address), then leaves its cluster, joins the
other, and brings back the partitions it served (``invocation/merging.py``:
whole where the other instance lost them, else the changes made while split,
by each map's merge policy). An instance that would not admit us is logged
once and never merged into. The transport refuses a peer of another cluster
name before any of this, and a peer that fails TLS is not merged with (asked
again with back-off: it may be restarted with the right certificate). Only
instances of the same cluster ever merge. While another instance answers, the
master reports itself not safe (``another_instance``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

from peergrid.config import GridConfig
from peergrid.errors import (
    ClusterError,
    ClusterNameMismatchError,
    PeerGridError,
    TLSError,
)
from peergrid.protocol import JoinReply, JoinStatus, Member, MemberList, Terms

log = logging.getLogger("peergrid.cluster")

_MAX_BACKOFF = 60.0  # seconds: the longest a refused candidate waits to be asked again


def outlived(ours: MemberList, theirs: MemberList, served_at: float) -> bool:
    """Of two instances that both lost their quorum for good, True when ours (whose master
    last served at ``served_at``, wall-clock seconds) must merge into theirs: theirs served
    later (to the millisecond, as the list answers carry it); on a tie, by ``should_merge``."""
    mine, other = round(served_at * 1000), round(theirs.served_at * 1000)
    if mine != other:
        return mine < other
    return should_merge(ours, theirs)


def should_merge(ours: MemberList, theirs: MemberList) -> bool:
    """True when the instance whose list is ``ours`` must merge into the one with ``theirs``.

    False when either has no members, or they share one (one cluster, two
    versions of its list).
    """
    if not _apart(ours, theirs):
        return False
    if len(ours.members) != len(theirs.members):
        return len(ours.members) < len(theirs.members)
    return ours.master_uuid > theirs.master_uuid


def _apart(ours: MemberList, theirs: MemberList) -> bool:
    """Whether two lists are of two instances: both have members, and none in common (else
    one cluster, two versions of its list, or someone not yet joined)."""
    return bool(ours.members and theirs.members) and not set(ours.uuids) & set(theirs.uuids)


class MergePeer(Protocol):
    """The calls merging makes (``peergrid.transport.PeerClient`` provides them)."""

    async def get_members(self, timeout: float | None = None, diagnose: bool = False) -> MemberList: ...
    async def merge(self, into: MemberList, timeout: float | None = None) -> None: ...
    async def join(
        self,
        member: Member,
        terms: Terms,
        timeout: float | None = None,
        probe: bool = False,
    ) -> JoinReply: ...


class MergingMembership(Protocol):
    """What merging needs of membership."""

    @property
    def me(self) -> Member: ...
    @property
    def members(self) -> MemberList: ...
    @property
    def is_master(self) -> bool: ...
    @property
    def active(self) -> bool: ...
    @property
    def address(self) -> str: ...
    @property
    def lost_quorum(self) -> bool: ...
    @property
    def served_at(self) -> float: ...
    def outlive(self, other: MemberList) -> None: ...


class Merger:
    """Finds other instances of this cluster and merges the smaller into the larger. Loop thread."""

    def __init__(
        self,
        config: GridConfig,
        cluster: MergingMembership,
        peer: Callable[[str], MergePeer],
        candidates: Callable[[], Iterable[str]],
        merge_into: Callable[[MemberList], Awaitable[None]],
        settled: Callable[[], Awaitable[bool]],
    ) -> None:
        self._config = config
        self._name = config.cluster
        self._timing = config.timing
        self._cluster = cluster
        self._peer = peer
        self._candidates = candidates  # addresses that may be members of another instance
        self._merge_into = merge_into  # leave this instance, join ``into``'s, re-write our data
        self._settled = settled  # no migration in this instance: each partition served by its owner
        # Candidates that failed the checks (another cluster name, a TLS failure): address ->
        # (refusals in a row, when to ask again). Asked again with back-off, never ignored for good:
        # a member restarted with the right configuration must be found again.
        self._refused: dict[str, tuple[int, float]] = {}
        # Another instance of this cluster answered here lately: address -> when (safe_state).
        self.others_seen: dict[str, float] = {}
        self._incompatible: set[str] = set()  # masters of instances that refused to admit us
        self._merging = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def check(self) -> None:
        """Look for another instance of the cluster (master only), and act on the first found."""
        cluster = self._cluster
        if not cluster.is_master or not cluster.active or self._merging:
            return
        known = {member.address for member in cluster.members.members}
        candidates = [a for a in dict.fromkeys(self._candidates()) if a not in known]
        for address in set(self._refused) - set(candidates):
            del self._refused[address]  # one that went away is logged again if it comes back
        for address in set(self.others_seen) - set(candidates):
            del self.others_seen[address]
        now = time.monotonic()
        for address in candidates:
            refused = self._refused.get(address)
            if refused is not None and now < refused[1]:
                continue
            theirs = await self._members_at(address)
            if theirs is not None:
                theirs = await self._masters_word(address, theirs)
            if theirs is None or not cluster.is_master or self._merging:
                self.others_seen.pop(address, None)
                continue
            ours = cluster.members
            # (One that lost its quorum merges into ours whatever their sizes.)
            if (
                self._into(ours, theirs)
                or should_merge(theirs, ours)
                or (theirs.quorum_lost and _apart(ours, theirs))
            ):
                self.others_seen[address] = time.monotonic()
            else:
                self.others_seen.pop(address, None)
            if theirs.master_uuid in self._incompatible:
                continue
            if self._into(ours, theirs):
                await self.merge(theirs)
                return
            if cluster.lost_quorum and theirs.quorum_lost and _apart(ours, theirs):
                cluster.outlive(theirs)  # (``_into``: theirs served first, and merges into ours)
            master = theirs.find(theirs.master_uuid)
            if should_merge(theirs, ours) and master is not None and not cluster.lost_quorum:
                # Theirs merges into ours; its master may not know of us: tell it.
                log.info(
                    "member %s: another instance of cluster %r (%d members, master %s) should merge "
                    "into this one (%d members); telling its master",
                    cluster.address,
                    self._name,
                    len(theirs.members),
                    master.address,
                    len(ours.members),
                )
                try:
                    await self._peer(master.address).merge(ours, timeout=self._timing.rpc_timeout * 3)
                except PeerGridError as exc:
                    # Not now (it is busy, or the sizes just changed), or never (it cannot join us:
                    # it logged why). Either way the next check looks again.
                    log.debug("member %s: %s did not merge: %s", cluster.address, master.address, exc)
                return

    def _into(self, ours: MemberList, theirs: MemberList) -> bool:
        """Whether this instance must merge into ``theirs``: by ``should_merge``, or because
        its master lost its quorum for good (it admits no one: the other cannot merge into it).
        A member other than the master cannot tell the latter: below ``min_cluster_size`` it
        takes its master's word for it (it has no quorum to lose)."""
        if not _apart(ours, theirs):
            return False
        cluster = self._cluster
        if not cluster.is_master:
            return should_merge(ours, theirs) or len(ours.members) < self._config.min_cluster_size
        if not cluster.lost_quorum:
            return should_merge(ours, theirs) and not theirs.quorum_lost
        if theirs.quorum_lost:
            return outlived(ours, theirs, cluster.served_at)
        return True

    async def _masters_word(self, address: str, theirs: MemberList) -> MemberList:
        """``theirs``, as its master answers it: only a master says whether its lineage lost
        its quorum for good, and when it last served (a member of its answers neither). The
        answer at ``address`` itself if that is the master, or the master does not answer."""
        master = theirs.find(theirs.master_uuid)
        if master is None or master.address == address:
            return theirs
        answer = await self._members_at(master.address)
        return answer if answer is not None and answer.master_uuid == theirs.master_uuid else theirs

    async def _members_at(self, address: str) -> MemberList | None:
        """The member list of the member at ``address``; None when it cannot be asked."""
        try:
            members = await self._peer(address).get_members(timeout=self._timing.rpc_timeout, diagnose=True)
        except (ClusterNameMismatchError, TLSError) as exc:
            count = self._refused.get(address, (0, 0.0))[0] + 1
            if count == 1:
                log.warning(
                    "member %s: ignoring %s (asked again later): %s", self._cluster.address, address, exc
                )
            backoff = min(self._timing.discovery_interval * 2**count, _MAX_BACKOFF)
            self._refused[address] = (count, time.monotonic() + backoff)
        except PeerGridError as exc:
            log.debug("asking %s for its member list failed: %s", address, exc)
        else:
            self._refused.pop(address, None)
            return members
        return None

    def another_instance(self) -> str | None:
        """An address where another instance of this cluster answered lately (it should merge
        with this one, or this one with it), or None."""
        recent = time.monotonic() - 3 * self._timing.discovery_interval - self._timing.rpc_timeout
        return next((address for address, seen in self.others_seen.items() if seen >= recent), None)

    async def handle_merge(self, into: MemberList) -> None:
        """A peer says the instance of ``into`` should absorb ours: check it, then merge.

        The claim is checked against the other instance itself (its list, as
        one of its members gives it), so a merge happens only when the rule
        says so; it then runs in the background. ``ClusterError`` when not.
        """
        cluster = self._cluster
        if self._merging:
            return
        if not cluster.active:
            raise ClusterError("this member is not active in a cluster")
        if into.master_uuid in self._incompatible:
            raise ClusterError(f"the instance of master {into.master_uuid} would not admit this member")
        theirs = None
        for member in sorted(into.members, key=lambda m: m.uuid != into.master_uuid):
            theirs = await self._members_at(member.address)
            if theirs is not None:
                break
        if theirs is None:
            raise ClusterError("none of the members of the instance to merge into answered")
        if not self._into(cluster.members, theirs):
            raise ClusterError(
                f"not merging: this instance has {len(cluster.members.members)} members, "
                f"the other {len(theirs.members)}"
            )
        if not self._merging:
            self._spawn(self.merge(theirs))

    async def merge(self, into: MemberList) -> None:
        """Leave this instance for ``into``'s; the master tells its members first.

        The master merges only a settled instance: each member then re-writes
        the partitions it owns and serves, and together they cover all of
        them (during a migration some would be covered by nobody). An
        unsettled instance merges at a later check.
        """
        cluster = self._cluster
        if self._merging or (cluster.is_master and not await self._settled()):
            return
        if not self._into(cluster.members, into):
            return  # ours grew (or shrank) since the decision: the next check decides again
        self._merging = True
        try:
            refused, why_not = await self._admitted(into)
            if why_not:
                if refused:  # for good: another partition count or serializer, a wrong address
                    self._incompatible.add(into.master_uuid)
                log.log(
                    logging.ERROR if refused else logging.INFO,
                    "member %s: cluster %r runs as two instances, but the other one (master %s) "
                    "would not admit this member%s: %s; not merging into it",
                    cluster.address,
                    self._name,
                    into.master_uuid,
                    "" if refused else " now",
                    why_not,
                )
                return
            if not cluster.active:
                return  # it re-joins already (its master left first)
            ours = cluster.members
            master = into.find(into.master_uuid)
            log.warning(
                "member %s: cluster %r runs as two instances; merging this one (%d members) into the "
                "one of %d members whose master is %s",
                cluster.address,
                self._name,
                len(ours.members),
                len(into.members),
                master.address if master else into.master_uuid,
            )
            if cluster.is_master:
                others = [m.address for m in ours.members if m.address != cluster.address]
                await asyncio.gather(*(self._tell(address, into) for address in others))
            await self._merge_into(into)
        finally:
            self._merging = False

    async def _admitted(self, into: MemberList) -> tuple[bool, str]:
        """Whether the master of ``into`` would admit this member (a join probe).

        ``(False, "")`` when it would; ``(True, why)`` when it refuses for good
        (the join checks failed); ``(False, why)`` when it cannot say now.
        """
        master = into.find(into.master_uuid)
        address = master.address if master is not None else into.members[0].address
        for _ in range(3):  # follow a redirect or two to the current master
            try:
                reply = await self._peer(address).join(
                    self._cluster.me,
                    self._config.terms(),
                    timeout=self._timing.rpc_timeout,
                    probe=True,
                )
            except PeerGridError as exc:
                return False, str(exc)
            if reply.status == JoinStatus.ACCEPTED:
                return False, ""
            if reply.status == JoinStatus.REFUSED:
                return True, reply.reason
            if reply.status != JoinStatus.NOT_MASTER or not reply.master_address:
                return False, reply.reason or "it is not ready"
            address = reply.master_address
        return False, "its master could not be found"

    async def _tell(self, address: str, into: MemberList) -> None:
        try:
            await self._peer(address).merge(into, timeout=self._timing.rpc_timeout * 2)
        except PeerGridError as exc:
            # It stays behind alone, then finds the survivor on its own and merges too.
            log.warning("member %s: could not tell %s to merge: %s", self._cluster.address, address, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel a merge in progress."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
