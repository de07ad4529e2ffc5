"""Membership: joining, the versioned member list, heartbeats, failure detection.

The oldest member is the master: it alone creates new versions of the member
list (a join, a leave, a death) and publishes them to everyone. Members adopt
only a newer version than theirs, from anyone: publication, heartbeat replies
and replication requests all carry versions, and a member that sees a newer
one pulls it. Each member heartbeats the master (in a large cluster through a
tree of relays, ``cluster.relay``; and with ``min_cluster_size`` that many
others), so a member's cost is constant in the cluster's size, the master's too; the
master judges every member (a silent one is probed before it is removed), the
others judge only the master. When the master goes silent, members probe the
older members, oldest first; the oldest member that hears from nobody older
takes over (see ``_detect_failures``; docs/architecture.md says why not SWIM).

A member that finds itself missing from a newer list was declared dead (it
was paused, or cut off): it drops its data and joins again as a new member.

Judgement never rests on a stale clock: time this member's loop did not run
(a pause, an overloaded process) is not counted as silence of the others, so a
member resuming from SIGSTOP does not declare everyone dead at its first tick.

Owner leases: a member serves its partitions only while ``lease_until`` (a
monotonic deadline) lies ahead. A non-master renews it from the master's
answers to its heartbeats (``send time + lease``); the master from its own
timely ticks, but after a stall only once a heartbeat sent since was answered
(or it is alone). With ``min_cluster_size`` the lease also needs answers from
that many members (less one). Leases are shorter than ``failure_timeout`` by
the drift bound, so a member that others may declare dead has stopped serving
before they do (``Timing.lease``).

Peers are not trusted blindly: the master calls a joiner back at the address
it announced (and checks the uuid that answers) before admitting it, so an
address nobody serves on never enters the member list; a list published by a
master this member has never heard of is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid as uuid_module
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

from peergrid.cluster.relay import Relaying, ancestors
from peergrid.config import CLOCK_DRIFT, GridConfig
from peergrid.errors import (
    ClusterError,
    ClusterNameMismatchError,
    JoinError,
    PeerGridError,
    PeerUnavailableError,
    TLSError,
)
from peergrid.protocol import (
    UNANSWERED,
    HeartbeatReply,
    HeartbeatStatus,
    JoinReply,
    JoinStatus,
    Member,
    MemberList,
    RelayedBeat,
    Terms,
)

_random = random.Random()  # noqa: S311 - jitter and sampling; our own: the application's global state is not ours

log = logging.getLogger("peergrid.cluster")

#: How far a take-over numbers its list above the taker's own. The dead master may have
#: published lists the taker never got (the publication to it was lost, and the master died
#: before the taker's next heartbeat told it the version): members holding one of those would
#: take a taker's list of the same version for no news and follow the dead master for ever.
#: A master publishes one list per admitted batch, leave or removal, so it cannot have made
#: this many in the moments between the taker's last answer from it and its death.
TAKEOVER_GAP = 1_000

#: How many younger members a member about to take over asks whether the master answers them
#: (SWIM's indirect probe): an overloaded or half-cut-off master that others still hear is not
#: replaced because one member stopped hearing it.
TAKEOVER_WITNESSES = 3

#: Highest local-health score (Lifeguard's "awareness"): each point lengthens this member's
#: judgement of others by one heartbeat interval.
MAX_HEALTH = 8

#: Seconds between two log lines of a member still waiting to be admitted.
JOIN_REPORT_EVERY = 15.0
_JOIN_STATUS = {v: k.lower().replace("_", " ") for k, v in vars(JoinStatus).items() if k.isupper()}


@dataclass
class _QuorumAnswers:
    """What ``min_cluster_size`` counts: heartbeat answers toward owner leases, and the members
    the master cannot count (silent, or gone on in another lineage of the list)."""

    #: uuid -> send time of the latest heartbeat that member answered OK while it ran our very
    #: list version (``_renew``).
    acked: dict[str, float] = field(default_factory=dict)
    #: uuid -> when we last answered OK a heartbeat of that member at its own list version: our
    #: answer may be renewing its lease (``vouch_lapse``).
    vouched: dict[str, float] = field(default_factory=dict)
    #: When these answers last sufficed for our lease, or our list last changed (``has_quorum``).
    quorate_at: float = 0.0
    #: uuid -> since when a member answers not counting us a member (it is on another lineage
    #: of the list: the other side's take-over, or another instance).
    elsewhere: dict[str, float] = field(default_factory=dict)
    #: Master: members kept in the list because removing them would leave fewer than
    #: ``min_cluster_size`` (``Membership._within_quorum``); counted toward no quorum.
    kept: frozenset[str] = frozenset()
    #: Master: its list fell below ``min_cluster_size`` by removing members that may live on
    #: elsewhere: its lineage lost its quorum, and is not revived by admitting joiners.
    lost: bool = False


@dataclass
class _Admission:
    """The master's admission of joiners in batches (``Membership._admit``)."""

    #: uuid -> (joiner, its future list) of the batch gathering now.
    batch: dict[str, tuple[Member, asyncio.Future[MemberList | None]]] = field(default_factory=dict)
    last: float = float("-inf")  # when the last batch was admitted
    reported: dict[str, int] = field(default_factory=dict)  # uuid -> list version of its last heartbeat
    catch_up: asyncio.Event | None = None  # set once most members have the master's list


class State(Enum):
    """Where this member is in its life."""

    JOINING = "joining"
    ACTIVE = "active"
    LEAVING = "leaving"
    STOPPED = "stopped"


class PeerCalls(Protocol):
    """The peer calls membership makes (``peergrid.transport.PeerClient`` provides them)."""

    async def join(
        self,
        member: Member,
        terms: Terms,
        timeout: float | None = None,
        probe: bool = False,
    ) -> JoinReply: ...
    async def heartbeat(
        self,
        uuid: str,
        list_version: int,
        timeout: float | None = None,
        relayed: tuple[RelayedBeat, ...] = (),
        master: str = "",
        list_master: str = "",
    ) -> HeartbeatReply: ...
    async def publish(self, members: MemberList, timeout: float | None = None) -> None: ...
    async def get_members(self, timeout: float | None = None) -> MemberList: ...
    async def leave(self, uuid: str, final: bool, timeout: float | None = None) -> None: ...


@dataclass
class _JoinRun:
    """A join under way: its rounds, and the addresses it asked to admit this member."""

    rounds: asyncio.Future[None]
    asked: set[str] = field(default_factory=set)


class Membership:
    """This member's view of the cluster, kept current; loop thread only."""

    _joining: _JoinRun | None = None  # the join under way (``join``)
    #: When this member adopted its list, or (as master) last asked whether anyone follows it.
    _list_checked = 0.0
    #: A master back from a stall, not yet sure no one took over meanwhile (``_lift_fence``).
    _fenced = False
    #: Wall-clock seconds when this member last served: held its lease with a quorum (the
    #: merge check of two lineages that both lost theirs compares it, ``answer_list``).
    _served_at = 0.0
    #: Send time of the latest heartbeat our master answered OK, counted, from our list version
    #: or a newer one (or of the join it admitted us by): what a member's lease rests on.
    _granted = 0.0

    def __init__(
        self,
        config: GridConfig,
        me: Member,
        peer: Callable[[str], PeerCalls],
        on_change: Callable[[MemberList, MemberList], None],
        on_removed: Callable[[], None],
        seeds: Callable[[], Iterable[str]],
        forget: Callable[[str], None] | None = None,
        hints: Callable[[], Iterable[str]] | None = None,
        on_orphaned: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock  # monotonic seconds (a simulation passes its virtual clock)
        self._config = config
        self._timing = config.timing
        self.me = me
        self._peer = peer
        self._on_change = on_change  # (old, new), called on every adopted list
        self._on_removed = on_removed  # this member was dropped from the cluster
        # Our master no longer counts us a member (it left for another instance of the cluster,
        # or restarted): join again, keeping our data.
        self._on_orphaned = on_orphaned or on_removed
        self._orphan_check = False  # _check_orphaned is running
        self._seeds = seeds
        self._forget = forget  # close the channel to an address (a new one is made on use)
        # Addresses discovery found (mDNS): tried like seeds, but a hint that fails the join
        # checks (another cluster, a TLS failure, a refusal) is only logged and ignored.
        self._hints = hints
        self._ignored_hints: set[str] = set()
        self.state = State.JOINING
        # The list in force; and uuid -> the version of it since which that member has been in it
        # without a break (as far as this member saw): frames its earlier self sent, before it was
        # removed and admitted again, are stamped with an older version (``Answers.frame``).
        self.members, self.since = MemberList(0, "", ()), dict[str, int]()
        self._last_heard: dict[str, float] = {}
        #: Monotonic deadline of this member's owner lease (read from any thread).
        self.lease_until = 0.0
        # uuid -> send time of the latest heartbeat that member answered OK (counted us a member).
        self._acked: dict[str, float] = {}
        self._quorum = _QuorumAnswers()  # the answers min_cluster_size counts, both ways
        # Send time of the latest heartbeat a member answered OK from our list version (or a
        # newer one), or when one heartbeat us at it: what a master's lease rests on
        # (``_renew``). The master that formed the cluster has it until it stalls (0.0 >=
        # 0.0); one that took over, once a member has taken its list up (``adopt``).
        self._confirmed_at = 0.0
        self._resumed = 0.0  # when this member last noticed its loop had stalled
        self._pulling = False
        # The list being confirmed, and the task confirming it (``_adopt_confirmed``).
        self._confirming: tuple[MemberList, asyncio.Task[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        # The list version this member (re)joined at: a frame stamped with an older one was sent to
        # its earlier self (before a rejoin: a cut held it in TCP), and is refused.
        self.joined_version = 0
        self._seen_joining: dict[str, str] = {}  # address -> uuid of seeds that answered "joining too"
        # Members that asked *us* to admit them while we were joining: address -> (uuid, when).
        self._joiners: dict[str, tuple[str, float]] = {}
        self._answered = False  # some seed answered during this join: a cluster exists
        # When a seed last answered a join, and when the next report of a member still joining is due.
        self._answered_at = self._report_at = 0.0
        # address -> join calls to it in a row that got no answer in time (each waits longer).
        self._join_slow: dict[str, int] = {}
        self._unreachable = ""  # why the last master that answered could not call us back
        self._seed_errors: dict[str, str] = {}  # address -> why the last join call to it failed
        self._join_answers: dict[str, str] = {}  # address -> its last answer to a join (logged)
        self._progress = 0  # the highest list version a seed answered with during this join
        # An address that answered this join from a formed cluster (list version > 0): while still
        # joining, we send other joiners there rather than name a starting member to defer to.
        self._cluster_at = ""
        # Who may form the cluster at a start: only the static seeds (a member that is no seed,
        # however low its uuid, waits for them), unless there are none, or no seed said it is
        # starting within join_timeout (none knows itself one: seeds given by another name).
        self._static: frozenset[str] = frozenset()
        self._anyone_forms = False  # (set as join() starts)
        # The master admits joiners in batches: uuid -> (member, its future list) until the next one.
        self._admission = _Admission()
        # Failure detection (see "heartbeats" below).
        self._beat_from: dict[str, float] = {}  # master: when each member's own heartbeat last came
        # Master: members admitted whose first heartbeat has not come yet (a process that just
        # joined may be busy taking its partitions over): judged after twice the timeout.
        self._fresh: set[str] = set()
        self._rotation: list[str] = []  # uuids still to probe in this round of the rotation
        self._health = 0  # local health, 0 (healthy) .. MAX_HEALTH: lengthens this member's judgements
        self._judging = False  # master: a judgement of silent members is running
        self._master_quiet = False  # non-master: the master has been silent for two heartbeats
        self._beat_errors: dict[str, str] = {}  # uuid -> why the last heartbeat to it failed
        # Members whose last heartbeat or probe found no process at their address (refused, reset,
        # or another process answered): dead for sure, removed at the failure timeout even when
        # many are silent at once. Silence without that evidence may be a starved process.
        self._refused: set[str] = set()
        # The masters of lists _plausible refused (logged once); and uuid -> since when that
        # member, though it answers, cannot lead or take over our lineage (``_departed``): it
        # gives a newer list of our cluster whose master is not in ours (``_pull``: it went on
        # in another lineage, though it still counts us), or answers that it is joining again
        # (a member of no list).
        self._unknown_masters, self._astray = set[str](), dict[str, float]()
        # When the master last said most members went silent; when our loop last ran late.
        self._at_fault_warned = self._strained_at = float("-inf")
        # uuids with a probe in flight; heartbeats carried for others, and this member's own relay.
        self._probing, self._relay = set[str](), Relaying()

    # ------------------------------------------------------------------ reading
    @property
    def is_master(self) -> bool:
        """True when this member publishes the member list."""
        return self.members.master_uuid == self.me.uuid

    @property
    def active(self) -> bool:
        """True while this member is a member of a cluster (joined, not leaving)."""
        return self.state is State.ACTIVE

    @property
    def lost_quorum(self) -> bool:
        """Master: its list fell below ``min_cluster_size`` by removing members that live on
        in another lineage of the list (``_within_quorum``): this instance admits no one, and
        merges into another instance whatever their sizes (``cluster.merge``)."""
        return self._quorum.lost and self.is_master

    @property
    def served_at(self) -> float:
        """Wall-clock seconds when this member last served: held its lease with the quorum
        ``min_cluster_size`` asks (0.0: never)."""
        return self._served_at

    def answer_list(self) -> MemberList:
        """The list as ``get_members`` answers it: with when this member last served (held its
        lease, with the quorum ``min_cluster_size`` asks) and whether, as master, its lineage
        lost its quorum for good. The merge check compares them (``cluster/merge.py``)."""
        return replace(self.members, served_at=self._served_at, quorum_lost=self.lost_quorum)

    def outlive(self, other: MemberList) -> None:
        """Master whose lineage lost its quorum for good, on finding that ``other``'s lost it
        too and served before this one last did: admit again, so that the other's members can
        merge into this lineage, the one holding the latest acknowledged writes (they bring
        theirs: ``cluster/merge.py``). Without this, each would wait for the other to admit it,
        for ever."""
        if not self.lost_quorum:
            return
        self._quorum.lost = False
        master = other.find(other.master_uuid)
        log.warning(
            "member %s: the other lineage of cluster %r (master %s) lost its quorum too, and served "
            "before this one last did; this one admits again, for its members to merge in",
            self.me.address,
            self._config.cluster,
            master.address if master is not None else other.master_uuid,
        )

    @property
    def address(self) -> str:
        """This member's address."""
        return self.me.address

    def master(self) -> Member | None:
        """The member publishing the list."""
        return self.members.find(self.members.master_uuid)

    def address_of(self, uuid: str) -> str | None:
        """The address of a member in the current list."""
        member = self.members.find(uuid)
        return member.address if member is not None else None

    # ------------------------------------------------------------------ joining
    async def join(self) -> None:
        """Join through the seeds (``_join``), or form a new cluster when no seed answers in
        time. Also done when the master's publication of a list that admits this member comes
        first (``handle_publish``: the answer to our join call was lost, or is late)."""
        rounds = asyncio.ensure_future(self._join())
        self._joining = _JoinRun(rounds)
        try:
            await rounds
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.state is not State.ACTIVE or (task is not None and task.cancelling()):
                raise
        finally:
            self._joining = None

    async def _join(self) -> None:
        """Join through the seeds, or form a new cluster when no seed answers in time.

        Forming alone is only right when nobody answers: a seed that answers
        (even "ask the master", or "not ready") proves a cluster exists, so the
        member keeps trying (the cluster may be electing a new master) and
        fails with ``JoinError`` rather than split the cluster in two.
        """
        timing = self._timing
        started = self._clock()
        alone_at = started + timing.join_timeout
        give_up_at = alone_at + 2 * timing.failure_timeout + timing.rpc_timeout
        progress_seen = 0
        refusal: PeerGridError | None = None
        lowest_rounds = 0
        pause = timing.join_retry_interval
        self._begin_join(started)
        while self.state is State.JOINING:
            static = list(self._seeds())
            self._formers(static, started)
            hints = [h for h in (self._hints() if self._hints else ()) if h not in self._ignored_hints]
            # Starting members we know of (the lowest each seed knows, and those that asked us):
            # only a lower one may form the cluster, so only those are worth asking. (Asking
            # every joiner that asked us would make a seed's round as long as the cluster.)
            lower = [a for a, u in self._starting().items() if u < self.me.uuid]
            seeds = [s for s in dict.fromkeys([*static, *hints, *lower]) if s != self.me.address]
            if not seeds:
                if self._hints is not None and self._clock() < alone_at:
                    await asyncio.sleep(timing.join_retry_interval)  # discovery may still find peers
                    continue
                if self._hints is not None:
                    log.info(
                        "member %s: discovery found no member of cluster %r within %.1fs; starting it alone",
                        self.me.address,
                        self._config.cluster,
                        timing.join_timeout,
                    )
                break
            result = await self._join_round(seeds, set(hints) - set(static))
            if result is True or self.state is not State.JOINING:
                return
            refusal = result if isinstance(result, PeerGridError) else refusal
            # Lowest for two rounds running: a joiner that has not reached us yet will
            # have asked by the second round (every joiner asks its seeds every round).
            lowest_rounds = lowest_rounds + 1 if self._should_form() else 0
            if lowest_rounds >= 2:
                log.info(
                    "member %s: every reachable seed is still starting; forming the cluster", self.me.address
                )
                break
            now = self._clock()
            if refusal is not None and now >= alone_at:
                raise refusal
            if not self._answered and now >= alone_at:
                errors = "; ".join(self._seed_errors[s] for s in seeds if s in self._seed_errors)
                log.warning(
                    "member %s: no seed of cluster %r answered at %s within %.1fs; "
                    "starting a new cluster alone%s",
                    self.me.address,
                    self._config.cluster,
                    ", ".join(seeds),
                    timing.join_timeout,
                    f" (last errors: {errors})" if errors else "",
                )
                break
            if self._progress > progress_seen:
                # The cluster admitted or removed members since we last looked: it is making
                # progress (a master admits joiners in batches, and may be busy): wait on.
                progress_seen = self._progress
                give_up_at = max(give_up_at, now + 2 * timing.failure_timeout + timing.rpc_timeout)
            if (
                now >= give_up_at
                and not self._unreachable
                and now - self._answered_at <= max(timing.join_max_wait / 4, 2 * timing.failure_timeout)
                and now - started < timing.join_max_wait
            ):
                # The seeds answer (however slowly: a round of three seeds on an overloaded
                # machine may see every call time out), and no one refused us: the cluster runs,
                # but its master is slow to admit (a hundred processes starting on two cores).
                # Wait on; fail once no seed has answered for a quarter of join_max_wait.
                give_up_at = now + timing.join_retry_interval
            if now >= give_up_at:
                why = self._unreachable or "its master may be down and not yet replaced"
                raise JoinError(
                    f"the seeds at {', '.join(seeds)} answered but cluster {self._config.cluster!r} did not "
                    f"admit this member within {now - started:.1f}s ({why}); not starting a second cluster"
                )
            self._report_join(now, started)
            pause = self._join_pause(pause)
            await asyncio.sleep(pause)
        if self.state is State.JOINING:
            self.form()

    async def _join_call(self, address: str) -> JoinReply:
        """Ask the member at ``address`` to admit us (``PeerCalls.join``)."""
        if self._joining is not None:
            self._joining.asked.add(address)
        try:
            reply = await self._peer(address).join(
                self.me,
                self._config.terms(),
                # Twice a control call: a master admitting many members at once calls each
                # back first; an answer that comes late is still an answer. Twice as long
                # again after each call to it that got no answer in time (up to four times):
                # a master seconds behind on a start of a hundred members admitted us, and
                # each of our calls expired before it read it, until it removed us.
                timeout=2 * self._timing.rpc_timeout * 2 ** min(self._join_slow.get(address, 0), 2),
            )
        except PeerUnavailableError as exc:
            if not exc.refused:
                self._join_slow[address] = self._join_slow.get(address, 0) + 1
            raise
        self._join_slow.pop(address, None)
        return reply

    async def _join_round(self, seeds: list[str], hinted: set[str]) -> bool | PeerGridError | None:
        """Try each seed once; True when joined, a refusal error, or None.

        ``hinted`` are the addresses only discovery named: their refusals are
        logged and the address ignored from then on, never an error.
        """
        refusal: PeerGridError | None = None
        self._seen_joining.clear()
        queue = list(seeds)
        tried: set[str] = set()
        while queue and self.state is State.JOINING:
            address = queue.pop(0)
            if address in tried or address == self.me.address:
                # (A seed may point at our own address as its master's: a member restarted on
                # the address of a master that just left. Asking ourselves would find us the
                # lowest starting member, and we would form a cluster of our own.)
                continue
            tried.add(address)
            sent = self._clock()
            try:
                reply = await self._join_call(address)
            except (ClusterNameMismatchError, TLSError) as exc:
                if address in hinted:
                    self._ignore_hint(address, str(exc))
                elif isinstance(exc, TLSError):
                    refusal = TLSError(f"cannot join the seed at {address}: {exc}", address=address)
                else:
                    refusal = ClusterNameMismatchError(
                        f"cannot join the seed at {address}: {_strip(exc)}; this member was started with "
                        f"cluster={self._config.cluster!r}"
                    )
                continue
            except PeerGridError as exc:
                log.debug("join via %s failed: %s", address, exc)
                self._seed_errors[address] = str(exc)
                self._join_answers[address] = _strip(exc)
                continue
            self._answered_by(address, reply, sent)
            if reply.list_version > 0:
                # A cluster runs (the answer came from a member of one): join it, never form.
                redirected = reply.status == JoinStatus.NOT_MASTER and reply.master_address
                self._cluster_at = reply.master_address if redirected else address
            if reply.status == JoinStatus.ACCEPTED and reply.members is not None:
                if self.state is State.JOINING:
                    self._admitted(reply.members, sent)
                return True
            if reply.status == JoinStatus.NOT_MASTER and reply.master_address:
                queue.insert(0, reply.master_address)
                if address in hinted:
                    hinted.add(reply.master_address)
            elif reply.status == JoinStatus.NOT_READY:
                # The lowest starting member the seed knows of (asked directly next round).
                self._seen_joining[reply.master_address or address] = reply.uuid
                # Not ready is why we wait now, whatever a master said before: one that could
                # not call us back once (its channel to our address still failing from a member
                # that ran there before us) must not make us give up while the cluster is not
                # admitting anyone (Jepsen's split-kill: a restart exited with JoinError).
                self._unreachable = ""
            elif reply.status == JoinStatus.UNREACHABLE:
                if reply.reason != self._unreachable:
                    log.warning("member %s: %s", self.me.address, reply.reason)
                self._unreachable = reply.reason
            elif reply.status == JoinStatus.REFUSED:
                if address in hinted:
                    self._ignore_hint(address, reply.reason)
                    continue
                raise JoinError(f"the seed at {address} refused this member: {reply.reason}")
        return refusal

    def _answered_by(self, address: str, reply: JoinReply, sent: float) -> None:
        """A seed answered a join sent at ``sent``: a cluster (or a starting member) runs."""
        now = self._clock()
        self._answered = True
        self._answered_at = now
        status = _JOIN_STATUS.get(reply.status, str(reply.status))
        self._join_answers[address] = (
            f"{status} in {now - sent:.1f}s"
            + (f" (ask {reply.master_address})" if reply.master_address else "")
            + (f": {reply.reason}" if reply.reason else "")
        )
        self._progress = max(self._progress, reply.list_version)

    def _report_join(self, now: float, started: float) -> None:
        """Say, now and then, why this member is still joining (an operator watching one that
        does not join)."""
        if now < self._report_at:
            return
        self._report_at = now + JOIN_REPORT_EVERY
        log.info(
            "member %s still joining cluster %r after %.0fs; last answers: %s",
            self.me.address,
            self._config.cluster,
            now - started,
            "; ".join(f"{a}: {why}" for a, why in self._join_answers.items()) or "none",
        )

    def _admitted(self, members: MemberList, sent: float | None) -> None:
        """The master admitted us, in ``members``, answering a request sent at ``sent`` (None:
        its publication said so, not an answer to a request of ours)."""
        self._joiners.clear()
        self.state = State.ACTIVE
        self.adopt(members)
        self.joined_version = self.members.version
        if sent is not None:
            # The master admitted us: as good as its answer to a heartbeat sent then.
            self._acked[members.master_uuid] = sent
            self._granted = max(self._granted, sent)
            self._renew(self._clock())
        log.info(
            "member %s joined cluster %r (%d members%s)",
            self.me.address,
            self._config.cluster,
            len(members.members),
            "" if sent is not None else "; told by the master's publication",
        )

    def _ignore_hint(self, address: str, why: str) -> None:
        """A discovered peer failed the join checks: log it once, and try it no more."""
        if address not in self._ignored_hints:
            self._ignored_hints.add(address)
            log.warning("member %s: ignoring discovered peer %s: %s", self.me.address, address, why)

    def _join_pause(self, last: float) -> float:
        """The pause before the next join round: once a cluster answered and we wait to be
        admitted, twice the last (up to 8 rounds' pause), so that a hundred joiners do not keep
        a busy master from admitting them; while members are starting, one round's."""
        interval = self._timing.join_retry_interval
        return min(last * 2, 8 * interval) if self._progress > 0 else interval

    def _begin_join(self, started: float) -> None:
        """Forget what the last join learned."""
        self._progress = 0
        self._cluster_at = ""
        self._formers(list(self._seeds()), started)
        self._answered = False
        self._unreachable = ""
        self._join_answers.clear()
        self._report_at = started + JOIN_REPORT_EVERY
        self._ignored_hints.clear()

    def _formers(self, static: list[str], started: float) -> None:
        """Say who may form the cluster this round (``_may_form``)."""
        self._static = frozenset(static)
        self._anyone_forms = not static or (
            self._clock() - started >= self._timing.join_timeout
            and not any(a in self._static for a in self._seen_joining)
        )

    def _may_form(self, address: str) -> bool:
        """Whether the member at ``address`` may form the cluster at a start: a static seed."""
        return self._anyone_forms or address in self._static

    def _starting(self) -> dict[str, str]:
        """address -> uuid of the members we know are starting that may form the cluster:
        seeds' answers of this round (each the lowest its seed knows of) and members that asked
        us lately."""
        recent = self._clock() - self._timing.join_timeout
        known = {address: uuid for address, (uuid, seen) in self._joiners.items() if seen >= recent}
        known.update(self._seen_joining)
        return {
            address: uuid
            for address, uuid in known.items()
            if uuid and uuid != self.me.uuid and self._may_form(address)
        }

    def _lowest_starting(self) -> tuple[str, str]:
        """``(uuid, address)`` of the lowest starting member we know of that may form the
        cluster, us included if we may (us when we know of none: the asker ignores that)."""
        mine = [(self.me.uuid, self.me.address)] if self._may_form(self.me.address) else []
        known = [*mine, *((u, a) for a, u in self._starting().items())]
        return min(known) if known else (self.me.uuid, self.me.address)

    def _should_form(self) -> bool:
        # Seeds that answer NOT_READY are starting too. The lowest uuid among the starting
        # seeds forms the cluster; every other member keeps asking and joins it. Only a seed
        # forms (``_may_form``): a member that is no seed may start late with a lower uuid than
        # the seed that formed the cluster, and find itself the lowest starting member before
        # the seeds it asks have joined: a second cluster, merged seconds later (simulated:
        # tests/test_simulation.py). Without static seeds (mDNS), any starting member may form,
        # and a member answers with the lowest one it knows of, so that members that share a
        # peer but not each other learn of each other through it.
        if not self._seen_joining or self._progress > 0 or not self._may_form(self.me.address):
            return False  # (a member of a formed cluster answered: we join it, however slow)
        return all(self.me.uuid < uuid for uuid in self._starting().values())

    def form(self) -> None:
        """Start a new cluster with this member alone as its master (a new origin)."""
        self._joiners.clear()
        self.state = State.ACTIVE
        self.adopt(MemberList(1, self.me.uuid, (self.me,), origin=uuid_module.uuid4().hex))
        self.joined_version = 1
        self._renew(self._clock())

    async def handle_join(self, member: Member, terms: Terms, probe: bool = False) -> JoinReply:
        """A member asks to join (any member may be asked; only the master admits).

        A ``probe`` runs every check and admits nothing: ACCEPTED, without a
        member list, says the member would be admitted (a merge asks first).
        """
        cluster = self._config.cluster
        differs = self._config.terms().refusal(cluster, terms)
        if differs:
            return JoinReply(JoinStatus.REFUSED, cluster=cluster, reason=differs)
        if self.state is State.JOINING and not probe:
            self._joiners[member.address] = (member.uuid, self._clock())
        # (A member of our list asking again answers as well as a heartbeat would: it is no
        # joiner for the quorum check, ``_quorum_lost``.)
        redirect = self._redirect(known=member.uuid in self.members)
        if redirect is not None:
            return redirect
        pending = self._admission.batch.get(member.uuid)
        if member.uuid not in self.members and (pending is None or pending[0] != member):
            # (A joiner already waiting in this batch was called back when it first asked: a
            # joiner whose call timed out on a busy master asks again, and must not cost it a
            # call back each time.)
            refusal = await self._call_back(member)
            redirect = refusal or self._redirect()  # we may have stopped being master meanwhile
            if redirect is not None:
                return redirect
        if probe:
            return JoinReply(JoinStatus.ACCEPTED, cluster=cluster, uuid=self.me.uuid)
        if member.uuid in self.members:
            # Admitted, but it did not hear so (its call timed out on a busy master): it asks
            # again, which says it runs as well as a heartbeat would.
            self._last_heard[member.uuid] = self._clock()
            self._quorum.kept -= {member.uuid}
        else:
            admitted = await self._admit(member)
            if admitted is None or member.uuid not in self.members:
                version = self.members.version
                return self._redirect() or JoinReply(
                    JoinStatus.NOT_READY, cluster=cluster, uuid=self.me.uuid, list_version=version
                )
        return JoinReply(
            JoinStatus.ACCEPTED,
            cluster=cluster,
            members=self.members,
            uuid=self.me.uuid,
            list_version=self.members.version,
        )

    async def _admit(self, member: Member) -> MemberList | None:
        """Admit ``member`` with whoever else asks within ``join_batch_window``: one new list
        version and one publication per batch, not per joiner (a simultaneous start of many
        members would otherwise make the master publish N lists to N members). The list that
        admits it, or None when this member stopped being master meanwhile."""
        entry = self._admission.batch.get(member.uuid)
        if entry is None:
            if not self._admission.batch:
                self._spawn(self._admit_batch())
            entry = (member, asyncio.get_running_loop().create_future())
            self._admission.batch[member.uuid] = entry
        return await asyncio.shield(entry[1])

    async def _admit_batch(self) -> None:
        # At most one admission a heartbeat while joiners keep coming (a hundred members
        # starting together: ~one list version a second rather than one every few joiners).
        timing = self._timing
        since = self._clock() - self._admission.last
        await asyncio.sleep(max(timing.join_batch_window, timing.heartbeat_interval - since))
        # And not before most members have the last list (their heartbeats say which they
        # have), for up to a failure timeout: each list costs every member a new table, version
        # queries and migrations, and lists made faster than members take them up only starve
        # the master of the CPU it needs to answer them.
        if not self._caught_up():
            self._admission.catch_up = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._admission.catch_up.wait(), timing.failure_timeout)
            self._admission.catch_up = None
        self._admission.last = self._clock()
        batch, self._admission.batch = self._admission.batch, {}
        admitted: MemberList | None = None
        try:
            # (Checked again: the batch waited, and the quorum may have gone meanwhile. A lineage
            # that lost it must not be revived by the joiners it checked before: Jepsen's
            # split-kill, a take-over side below min_cluster_size admitted the killed member's
            # restart 0.1 s after it dropped a member gone on in the other lineage, served with
            # it, and read values the other side had overwritten before the heal.)
            if self.is_master and self.state is State.ACTIVE and not self._quorum_lost():
                current = self.members
                joiners = [m for m, _ in batch.values() if m.uuid not in current]
                # A process restarted on the same address is a new member; the old one is gone.
                addresses = {m.address for m in joiners}
                kept = tuple(m for m in current.members if m.address not in addresses)
                now = self._clock()
                for joiner in joiners:
                    self._last_heard[joiner.uuid] = now
                    self._fresh.add(joiner.uuid)
                if joiners and self.adopt(current.successor(members=(*kept, *joiners))):
                    log.info(
                        "member %s admitted %s (list version %d)",
                        self.me.address,
                        ", ".join(m.address for m in joiners),
                        self.members.version,
                    )
                    self.publish()
                admitted = self.members
        finally:
            for _, future in batch.values():
                if not future.done():
                    future.set_result(admitted)

    def _caught_up(self) -> bool:
        """Master: whether nine in ten members' last heartbeat carried our list (those just
        admitted got it with their admission)."""
        version = self.members.version
        behind = sum(
            1
            for uuid in self.members.uuids
            if uuid != self.me.uuid
            and uuid not in self._fresh
            and self._admission.reported.get(uuid, 0) < version
        )
        return behind <= len(self.members.members) // 10

    def _redirect(self, known: bool = False) -> JoinReply | None:
        """The answer to a joiner when this member cannot admit it, or None when it can."""
        cluster = self._config.cluster
        if self.state is not State.ACTIVE and self._cluster_at:
            # Starting, but a formed cluster answered us: send the joiner there (a joiner whose
            # uuid is lower than the member that formed it, starting late, would otherwise find
            # itself the lowest starting member and form a second cluster).
            return JoinReply(
                JoinStatus.NOT_MASTER,
                cluster=cluster,
                master_address=self._cluster_at,
                uuid=self.me.uuid,
                list_version=self._progress,
            )
        if self.state is not State.ACTIVE:
            # Starting too: say who is the lowest starting member we know of (maybe us), so
            # that every member hears of it through the seeds they share and defers to it.
            uuid, address = self._lowest_starting()
            return JoinReply(
                JoinStatus.NOT_READY,
                cluster=cluster,
                uuid=uuid,
                master_address=address,
                list_version=self.members.version,
            )
        if not self.is_master:
            master = self.master()
            return JoinReply(
                JoinStatus.NOT_MASTER,
                cluster=cluster,
                master_address=master.address if master else "",
                uuid=self.me.uuid,
                list_version=self.members.version,
            )
        if self._fenced:
            # Back from a stall, this master may no longer be one (``_lift_fence``): its answer
            # would give the joiner a lease (even one it knows, re-joining).
            return JoinReply(
                JoinStatus.NOT_READY,
                cluster=cluster,
                uuid=self.me.uuid,
                list_version=self.members.version,
                reason=f"the master of cluster {cluster!r} at {self.me.address} is back from a stall "
                "and checks whether another member took over meanwhile",
            )
        if not known and self._quorum_lost():
            # Members admitted now would make this side quorate again without the copies the
            # silent ones hold (``_within_quorum``). The joiner asks on: they may answer again,
            # or its other seeds lead it to the side that has the quorum.
            return JoinReply(
                JoinStatus.NOT_READY,
                cluster=cluster,
                uuid=self.me.uuid,
                list_version=self.members.version,
                reason=(
                    f"the master of cluster {cluster!r} at {self.me.address} does not hear enough of "
                    f"its members for min_cluster_size={self._config.min_cluster_size}; it admits no "
                    "one until they answer"
                ),
            )
        return None

    def _quorum_lost(self) -> bool:
        """Master, with ``min_cluster_size``: whether members are silent and fewer than that
        remain without them (a minority cut off, or a majority paused). It admits no one then:
        new members would let it outvote the silent ones, and drop them with their copies."""
        need = self._config.min_cluster_size
        if need <= 1:
            return False
        if self._quorum.kept or self._quorum.lost:
            return True
        silent = len(self._quiet())
        return silent > 0 and len(self.members.members) - silent < need

    async def _call_back(self, member: Member) -> JoinReply | None:
        """Check that ``member`` answers at the address it announced; a refusal if not.

        Every member will dial that address: admitting one that nobody can
        reach would stall its partitions until the failure detector drops it.
        """
        cluster = self._config.cluster
        try:
            try:
                reply = await self._peer(member.address).heartbeat(
                    self.me.uuid, self.members.version, timeout=self._timing.rpc_timeout / 2
                )
            except PeerGridError:
                # Our channel to that address may be backing off from an earlier failure (we
                # asked it to admit us while it was not up yet; or it is the channel of a member
                # still in our list that ran there and died, and the joiner is its restart):
                # once more on a new channel.
                if self._forget is not None:
                    self._forget(member.address)
                await asyncio.sleep(0)  # (the channel is dropped by a task: let it run)
                reply = await self._peer(member.address).heartbeat(
                    self.me.uuid, self.members.version, timeout=self._timing.rpc_timeout / 2
                )
        except PeerGridError as exc:
            self._forget_address(member.address)
            return JoinReply(
                JoinStatus.UNREACHABLE,
                cluster=cluster,
                uuid=self.me.uuid,
                reason=(
                    f"the master of cluster {cluster!r} at {self.me.address} cannot reach the joining "
                    f"member at its address {member.address} ({_strip(exc)}); bind an address the other "
                    "members can reach"
                ),
            )
        if reply.uuid != member.uuid:
            self._forget_address(member.address)
            return JoinReply(
                JoinStatus.REFUSED,
                cluster=cluster,
                uuid=self.me.uuid,
                reason=(
                    f"another member ({reply.uuid or 'unknown'}) answers at {member.address}, the address "
                    f"member {member.uuid} announced; a member must announce the address it serves on"
                ),
            )
        return None

    def _forget_address(self, address: str) -> None:
        if self._forget is not None and all(m.address != address for m in self.members.members):
            self._forget(address)

    # ------------------------------------------------------------------ the list
    def adopt(self, members: MemberList) -> bool:
        """Replace the list with a newer version; True if it was adopted."""
        if members.version <= self.members.version or self.state is State.STOPPED:
            return False
        members = members.as_list()  # (not the served_at of the member that gave it to us)
        if self.state is State.JOINING:
            return False  # a stray publication before we joined: the join reply carries the list
        if self.me.uuid not in members:
            self._removed(members)
            return False
        old, self.members = self.members, members
        self._list_checked = self._clock()
        # (Versions of lists of another origin are not comparable: then every member counts from now.)
        same = old.origin == members.origin
        self.since = {
            u: self.since.get(u, members.version) if same else members.version for u in members.uuids
        }
        now = self._clock()
        if members.master_uuid == self.me.uuid and old.master_uuid != self.me.uuid:
            # Master from now on: every member heartbeats us, and is judged from now.
            self._last_heard = dict.fromkeys(members.uuids, now)
            self._beat_from = dict.fromkeys(members.uuids, now)
        for uuid in members.uuids:
            self._last_heard.setdefault(uuid, now)
            self._beat_from.setdefault(uuid, now)
        for uuid in list(self._last_heard):
            if uuid not in members:
                del self._last_heard[uuid]
        for uuid in list(self._beat_from):
            if uuid not in members:
                del self._beat_from[uuid]
        for uuid in list(self._admission.reported):
            if uuid not in members:
                del self._admission.reported[uuid]
        for uuid in list(self._beat_errors):
            if uuid not in members:
                del self._beat_errors[uuid]
        self._refused.intersection_update(members.uuids)
        for uuid in list(self._quorum.elsewhere):
            if uuid not in members:
                del self._quorum.elsewhere[uuid]
        if members.master_uuid != old.master_uuid:
            self._astray.clear()  # (judged against the old lineage's list: asked again, ``_pull``)
        for uuid in list(self._astray):
            if uuid not in members:
                del self._astray[uuid]
        if members.master_uuid == self.me.uuid:
            self._quorum.kept = self._quorum.kept.intersection(members.uuids)
        else:
            self._quorum.kept, self._quorum.lost = frozenset(), False
        self._fresh.intersection_update(members.uuids)
        for acks in (self._acked, self._quorum.acked):
            for uuid in list(acks):
                if uuid not in members:
                    del acks[uuid]
        if members.master_uuid != old.master_uuid:
            # Another lineage of the list (a take-over): answers counted under the old master's
            # list count toward no lease under this one. A member that took over would otherwise
            # serve at once on answers given to it as a member of the old list by members that
            # have since gone back to the old master (a heal just after its take-over), while
            # they serve there (simulated: tests/test_simulation.py).
            self._quorum.acked.clear()
            if old.master_uuid and members.master_uuid == self.me.uuid:
                # So for a master's own lease: one that took over serves once a member has
                # taken its list up, not on answers to its heartbeats as a member of the old
                # one. If no one does (the master it took over from resumed from a pause, and
                # the others stayed with it), it serves nothing, and their answers soon tell it
                # that it is the one left out (``_outvoted``): else two masters would serve the
                # same partitions. (A member that forms the cluster has no old master.)
                self._confirmed_at = -math.inf
        for member in old.members:
            if member.leaving and member.uuid not in members:
                # A member that left gracefully owned nothing since it was marked leaving: no
                # new owner needs to wait for its lease.
                self._quorum.vouched.pop(member.uuid, None)
        self._quorum.quorate_at = now  # (a new list: its members have a failure timeout to answer)
        self._on_change(old, members)
        self._renew(now)
        return True

    def _removed(self, members: MemberList) -> None:
        self.lease_until = 0.0  # serve nothing more: others own our partitions now
        if self.state is State.LEAVING:
            # Our own final leave: nothing to do but stop.
            self.members = members
            return
        if self.state is not State.ACTIVE:
            return  # already re-joining
        self.state = State.JOINING
        log.warning(
            "member %s was dropped from cluster %r (list version %d): it was not heard from in time; "
            "rejoining as a new member",
            self.me.address,
            self._config.cluster,
            members.version,
        )
        self._on_removed()

    def handle_publish(self, members: MemberList) -> None:
        """A peer published a list; ``ClusterError`` when it cannot be our cluster's. It is
        adopted once confirmed (``_confirmed``): whoever sent it is not taken at its word.

        While joining, a list that names this member, of a master at an address our join
        calls went to (or were sent to by a seed), is our admission: the master admitted us,
        and its answer was lost or is still on its way (a busy master; the answer to our next
        call may be too). Waiting for it would let the master remove us, as a member that
        never sent a heartbeat, and admit us again: two more lists for every member to take
        up. (Trusted as a join answer from that address is; no lease comes with it, only with
        heartbeat answers.)"""
        if self.state is State.JOINING:
            master = members.find(members.master_uuid)
            run = self._joining
            if (
                run is not None
                and members.find(self.me.uuid) == self.me
                and master is not None
                and master.address in {*run.asked, self._cluster_at}
            ):
                self._admitted(members, None)
                run.rounds.cancel()  # (its call under way: ``join`` returns)
            return
        if not self._plausible(members):
            raise ClusterError(
                f"ignored member list version {members.version}: its master {members.master_uuid!r} "
                "is not a member of this cluster"
            )
        if members.version > self.members.version:
            self._spawn(self._confirm_and_adopt(members))

    async def adopt_from_peer(self, members: MemberList) -> None:
        """Adopt a newer list a peer sent along with a request, once confirmed; ``ClusterError``
        when it cannot be (the request must not be answered on the strength of our older list:
        a new owner's version query makes us stop serving its partitions)."""
        if (
            members.version > self.members.version
            and self._plausible(members)  # another instance's list: answered, never adopted
            and not await self._adopt_confirmed(members)
        ):
            raise ClusterError(
                f"member list version {members.version} (master {members.master_uuid}) could not be "
                "confirmed by the members that may vouch for it"
            )

    async def _confirm_and_adopt(self, claimed: MemberList) -> None:
        await self._adopt_confirmed(claimed)

    async def _adopt_confirmed(self, claimed: MemberList) -> bool:
        """Adopt ``claimed`` (or a newer list) as the members that may vouch for it give it;
        True when this member's list is now at least as new.

        One confirmation at a time: a new list reaches a member with the master's publication
        and with the version query of every new owner at once, and each would otherwise ask the
        master for its list (at a hundred members, thousands of calls to the master a list).
        A request that brings the same version waits for the confirmation under way.
        """
        if claimed.version <= self.members.version:
            return True
        job = self._confirming
        if job is not None and not job[1].done() and job[0].version >= claimed.version:
            await asyncio.shield(job[1])
            if self.members.version >= claimed.version or job[0] == claimed:
                return self.members.version >= claimed.version
        job = (claimed, self._spawn(self._confirm(claimed)))
        self._confirming = job
        await asyncio.shield(job[1])
        return self.members.version >= claimed.version

    async def _confirm(self, claimed: MemberList) -> None:
        confirmed = await self._confirmed(claimed)
        if confirmed is not None:
            self.adopt(confirmed)  # (not while joining or stopped: adopt() checks)

    async def _confirmed(self, claimed: MemberList) -> MemberList | None:
        """``claimed``, a list newer than ours, as a member that may vouch for it gives it (or a
        newer one still); None when none does. A list is never taken from whoever sends it:

        - our master makes every list: asked first (unless it is silent to us);
        - the claimed list's master, if every member older than it in our list is silent to us
          (it took over, as failure detection lets the oldest member that hears from nobody
          older do);
        - a list without us is confirmed by a majority of the other members of our list (we
          were declared dead while paused, or cut off: even as master, we learn it so).

        So a peer, even one holding a certificate of the cluster, cannot publish a list in the
        master's name, nor remove a member the others still count.
        """
        if not self._plausible(claimed) or claimed.origin != self.members.origin:
            return None
        master = self.members.master_uuid
        if master != self.me.uuid and not self._silent(master):
            theirs = await self._members_of(master)
            if theirs is not None and theirs.version >= claimed.version:
                return theirs
        taker = claimed.master_uuid
        older = self.members.uuids[: self.members.uuids.index(taker)] if taker in self.members else ()
        # (A member older than the taker is not taken over while it runs: only a majority can
        # tell it that it was declared dead, below.)
        if taker != master and self.me.uuid not in older:
            # We do not hear the members other than the master every tick: ask those we have
            # not heard lately before believing they are silent.
            quiet = [m for m in self.members.members if m.uuid in older and self._silent(m.uuid)]
            await asyncio.gather(*(self._probe(m, 2 * self._timing.heartbeat_interval) for m in quiet))
        if taker != master and self.me.uuid not in older and all(self._silent_here(u) for u in older):
            theirs = await self._members_of(taker)
            if theirs is not None and theirs.version >= claimed.version:
                return theirs
        if taker == self.me.uuid and master != self.me.uuid and self._silent(master):
            return await self._handed_over(claimed, master)
        if self.me.uuid in claimed:
            return None
        others = [m.uuid for m in self.members.members if m.uuid != self.me.uuid]
        lists = await asyncio.gather(*(self._members_of(uuid) for uuid in others))
        agree = [m for m in lists if m is not None and m.version >= claimed.version and self.me.uuid not in m]
        if len(agree) * 2 > len(others):
            return max(agree, key=lambda m: m.version)
        return None

    async def _handed_over(self, claimed: MemberList, master: str) -> MemberList | None:
        """``claimed`` names us master and we did not make it: the last list of our master as it
        left (it names the next oldest), whose publication to us was lost or came as the master
        exited, before we could confirm it with the master. Members that took it up confirmed it
        with the master while it ran: one of them holding it (or a newer list naming us) vouches
        for it. Without this the hand-off never completes: those members answer our take-over
        probes that their master (we) answers them, so we never take over either."""
        others = [m.uuid for m in self.members.members if m.uuid not in (self.me.uuid, master)]
        lists = await asyncio.gather(*(self._members_of(uuid) for uuid in others))
        held = [
            m
            for m in lists
            if m is not None and m.version >= claimed.version and m.master_uuid == self.me.uuid
        ]
        return max(held, key=lambda m: m.version) if held else None

    def _quiet(self) -> set[str]:
        """The other members not heard from for two heartbeats (``_silent``)."""
        return {u for u in self.members.uuids if u != self.me.uuid and self._silent(u)}

    def _silent(self, uuid: str) -> bool:
        """Not heard from for two heartbeats."""
        heard = self._last_heard.get(uuid)
        return heard is None or self._clock() - heard > 2 * self._timing.heartbeat_interval

    def _silent_here(self, uuid: str) -> bool:
        """Silent (``_silent``), or answering from a list without this member: in neither case
        can it lead our lineage, so a take-over by a younger member stands (as failure
        detection let the taker decide: ``_absent``)."""
        return self._silent(uuid) or self._departed(uuid, self._clock(), 0.0)

    async def _list_at(self, address: str) -> MemberList | None:
        """The list of our cluster the member at ``address`` runs (of any lineage), or None."""
        try:
            theirs = await self._peer(address).get_members(timeout=self._timing.rpc_timeout)
        except PeerGridError as exc:
            log.debug("asking %s for its member list failed: %s", address, exc)
            return None
        return theirs if theirs.origin == self.members.origin or not theirs.version else None

    async def _members_of(self, uuid: str) -> MemberList | None:
        """The list member ``uuid`` has, asked at the address our list has for it."""
        address = self.address_of(uuid)
        theirs = None if address is None else await self._list_at(address)
        return (
            theirs
            if theirs is not None and theirs.origin == self.members.origin and self._plausible(theirs)
            else None
        )

    def _plausible(self, members: MemberList) -> bool:
        """False for a newer list this cluster cannot have made (logged).

        The master of any newer list is already in ours: the master is the
        oldest member, and members are only ever appended. A list naming an
        unknown master comes from another instance of the cluster, or is
        forged; adopting it could drop this member and its data.
        """
        if members.version <= self.members.version or not self.members.members:
            return True  # adopt() ignores it anyway, or we have no list to judge by
        if members.master_uuid in self.members:
            return True
        # Once per unknown master: after a split heals, the other side's lists arrive with
        # every publication, heartbeat answer and request for a while.
        if members.master_uuid not in self._unknown_masters:
            self._unknown_masters.add(members.master_uuid)
            log.warning(
                "member %s ignored member list version %d from unknown master %s (another instance "
                "of the cluster, merged by discovery; further lists from it are ignored silently)",
                self.me.address,
                members.version,
                members.master_uuid,
            )
        return False

    def publish(self, members: MemberList | None = None) -> None:
        """Send the current list to every other member, without waiting."""
        members = members or self.members
        for member in members.members:
            if member.uuid != self.me.uuid:
                self._spawn(self._publish_to(member.address, members))

    async def _publish_to(self, address: str, members: MemberList) -> None:
        with contextlib.suppress(PeerGridError):
            await self._peer(address).publish(members, timeout=self._timing.rpc_timeout)

    def saw_version(self, version: int, address: str | None) -> None:
        """Some peer has list ``version``; get it (confirmed) if it is newer than ours."""
        if version > self.members.version and not self._pulling and self.state is State.ACTIVE:
            master = self.members.master_uuid
            source = self.address_of(master) if master != self.me.uuid and not self._silent(master) else None
            source = source or address
            if source:
                self._pulling = True
                self._spawn(self._pull(source))

    async def _pull(self, address: str) -> None:
        try:
            theirs = await self._peer(address).get_members(timeout=self._timing.rpc_timeout)
            master = self.master()
            if master is not None and master.address == address and master.uuid != self.me.uuid:
                # From our master itself, at the address our list has for it: no one to ask.
                if theirs.origin == self.members.origin and self._plausible(theirs):
                    self.adopt(theirs)
            else:
                await self._adopt_confirmed(theirs)
            if theirs.origin == self.members.origin and not self._plausible(theirs):
                uuid = next((m.uuid for m in self.members.members if m.address == address), None)
                if uuid is not None:
                    self._astray.setdefault(uuid, self._clock())
        except PeerGridError as exc:
            log.debug("pulling the member list from %s failed: %s", address, exc)
        finally:
            self._pulling = False

    # ------------------------------------------------------------------ heartbeats
    def start_heartbeats(self) -> None:
        """Start the heartbeat and failure-detection ticker."""
        if self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick_forever())

    def handle_heartbeat(self, uuid: str, list_version: int, list_master: str = "") -> HeartbeatReply:
        """A peer says it is alive; it runs list ``list_version`` of master ``list_master`` (""
        from a member of an earlier version)."""
        member = self.members.find(uuid)
        if member is None:
            return HeartbeatReply(HeartbeatStatus.UNKNOWN_MEMBER, self.members.version)
        now = self._clock()
        self._last_heard[uuid] = now
        if self.is_master:
            if list_version > self.members.version:
                log.debug(
                    "member %s (master, list %d) heard from %s at list version %d",
                    self.me.address,
                    self.members.version,
                    member.address,
                    list_version,
                )
            self._beat_from[uuid] = now
            if list_version >= self.members.version and self._confirmed_at < now:
                # It follows our list: as good a confirmation as its answer to our heartbeat
                # (after a take-over, the first one our lease waits for: ``adopt``).
                self._confirmed_at = now
                self._renew(now)
            self._admission.reported[uuid] = list_version
            self._fresh.discard(uuid)
            if self._admission.catch_up is not None and self._caught_up():
                self._admission.catch_up.set()
        counted = not (self._fenced and self.is_master)  # (renews no lease: ``_lift_fence``)
        if counted and self._config.min_cluster_size > 1 and list_version == self.members.version:
            if list_master and list_master != self.members.master_uuid:
                # The same version of another lineage's list: two members took over from one
                # list (each side of a split, its master killed), each numbering its own
                # ``TAKEOVER_GAP`` above it. A member of both lists answering both at "its"
                # version would count toward both quorums, and both lineages serve at once.
                counted = False
            else:
                # An answer that renews the asker's lease while one we gave a member our list
                # dropped may still renew that one's would let both serve (two lineages of the
                # list, each counting us: a member that re-joined the other side after a split):
                # it waits.
                counted = self.vouch_lapse(self.members) == 0.0
                if counted:
                    self._quorum.vouched[uuid] = now
        self.saw_version(list_version, member.address)
        return HeartbeatReply(
            HeartbeatStatus.OK,
            self.members.version,
            leaving=self.state is State.LEAVING,
            master_heard=self._master_heard(now),
            counted=counted,
        )

    def _master_heard(self, now: float) -> float | None:
        """Seconds since the master answered a heartbeat of this member's (counted from when
        that heartbeat was sent; no credit for this member's own stalls): what a member about
        to take over asks of others. 0.0 on the master; None before any answer."""
        if self.is_master:
            return 0.0
        sent = self._acked.get(self.members.master_uuid)
        return None if sent is None else max(0.0, now - sent)

    async def _tick_forever(self) -> None:
        interval = self._timing.heartbeat_interval
        last = self._clock()
        while self.state in (State.ACTIVE, State.LEAVING, State.JOINING):
            now = self._clock()
            late = now - last - interval
            last = now
            if late > max(interval, self._timing.failure_timeout / 4):
                self._stalled(late, now)
            elif late > 0:
                self._credit(late, now)
            # Local health (Lifeguard): a loop that runs late is a sign this member is overloaded;
            # while it is, its judgements of others wait longer (``_judge_timeout``).
            if late > interval / 4:
                self._health = min(MAX_HEALTH, self._health + 1)
                self._strained_at = now
            elif self._health:
                self._health -= 1
            if self.state is not State.JOINING:
                try:
                    for member in self._targets():
                        self._spawn(self._heartbeat(member))
                    self._detect_failures(now)
                    self._renew(now)
                    if self.holds_lease() and self.has_quorum():
                        self._served_at = time.time()
                except Exception:  # a bug here must not end this member's heartbeats for good
                    log.exception("member %s: heartbeat tick failed", self.me.address)
            await asyncio.sleep(interval)

    def _targets(self) -> list[Member]:
        """Whom to heartbeat this tick: a constant number, whatever the cluster's size.

        The master, whose answer renews this member's lease; with ``min_cluster_size``, that
        many members more (their answers renew it too); and for the master one member in
        rotation, so that after a stall it learns soon whether it is still a member. The master
        hears from every member this way, and judges them; the others hear from the master
        only, and judge only it (``_detect_failures``).
        """
        others = [m for m in self.members.members if m.uuid != self.me.uuid]
        if not others:
            return []
        targets: dict[str, Member] = {}
        master = self.master()
        if master is not None and master.uuid != self.me.uuid:
            relay = self._relay_member()  # (one that stopped carrying our beats: the master too)
            targets.setdefault(*((master.uuid, master) if relay is None else (relay.uuid, relay)))
        need = self._config.min_cluster_size - 1  # answers the lease needs besides our own
        # The master's answer counts as one; one more than needed, as a target may be dead.
        want = len(targets) + (max(1, need + 1) if self.is_master else need)
        for _ in range(2 * len(others)):
            if len(targets) >= min(len(others), want):
                break
            if not self._rotation:
                self._rotation = [m.uuid for m in others]
                _random.shuffle(self._rotation)
            member = self.members.find(self._rotation.pop())
            if member is not None and member.uuid != self.me.uuid:
                targets.setdefault(member.uuid, member)
        return list(targets.values())

    def _credit(self, late: float, now: float) -> None:
        """This member's loop ran ``late`` seconds late: no one is judged on that time."""
        for heard in (self._last_heard, self._beat_from):
            for uuid, at in heard.items():
                heard[uuid] = min(now, at + late)

    def _stalled(self, stalled: float, now: float) -> None:
        """The loop did not run for ``stalled`` seconds (a pause, an overloaded process).

        Silence of the others during that time is not theirs: their clocks move
        on by as much, so no member is judged on time this member missed. The
        master's lease is not renewed until a heartbeat sent from now on is
        answered: it may have been declared dead meanwhile.
        """
        log.warning(
            "member %s: its loop did not run for %.2fs (a pause, or an overloaded process); "
            "not judging other members on the time it missed",
            self.me.address,
            stalled,
        )
        self._resumed = now
        self._health = MAX_HEALTH
        self._strained_at = now
        self._credit(stalled, now)
        if self.is_master and not self._fenced:
            self._fenced = True
            self._spawn(self._lift_fence())

    async def _lift_fence(self) -> None:
        """A master back from a stall serves again (its lease renews, ``_renew``) once no other
        member runs a newer list without it.

        While it could not answer, the next oldest may have taken over, and some members taken
        its list up while others, hearing this master again first, stay with it: each lineage
        would serve the partitions this master owned, the new owners there and this master
        here. Its first answer since it resumed would renew its lease at once (any member still
        on its list gives one); the answers of those that took the other list up may come
        later (one member a tick). So it asks every member first. While some hold the other
        list it serves nothing: it finds itself removed if most of them do (``_confirmed``),
        the member that took over goes back to it if most do not (``_outvoted``), and a
        member that keeps the other list is removed as any member that does not count us."""
        interval = self._timing.heartbeat_interval
        strays: dict[str, float] = {}  # address -> when it last answered from another lineage
        started = self._clock()
        try:
            while self._fenced and self.is_master and self.state in (State.ACTIVE, State.LEAVING):
                asked = self._clock()
                ours = {m.address for m in self.members.members if m.uuid != self.me.uuid}
                addresses = sorted(ours | strays.keys())
                lists = await asyncio.gather(*(self._list_at(address) for address in addresses))
                if self._resumed > asked:
                    continue  # stalled again meanwhile: its calls timed out unanswered
                now = self._clock()
                for address, theirs in zip(addresses, lists, strict=True):
                    if theirs is None:
                        continue
                    if theirs.version and self.me.uuid not in theirs:
                        if address not in ours and address not in strays:
                            continue  # not ours, nor seen with our list: another instance
                        if not strays:
                            log.warning(
                                "member %s: back from a stall, it finds %s on a list without it "
                                "(version %d, master %s): another member took over meanwhile; "
                                "serving nothing until that is settled",
                                self.me.address,
                                address,
                                theirs.version,
                                theirs.master_uuid,
                            )
                        if address in ours:
                            strays[address] = now
                    else:
                        strays.pop(address, None)  # back in our lineage, or joining (no lease)
                # Every member still in our list must have answered (silence is no evidence
                # that it did not take the other list up), or a failure timeout passed (one that
                # stays silent is likelier dead: the others' leases are not held up longer, and
                # it is removed in time, ``_judge``); and one that answered from another
                # lineage must have come back (or be joining: it holds no lease then), or have
                # been removed from our list for longer than a lease its master may have granted
                # it before then. (One that stays on for good is another instance of the
                # cluster, as after a split, and merges in time: this master must not refuse it.)
                answered = {a for a, theirs in zip(addresses, lists, strict=True) if theirs is not None}
                horizon = self._lease_horizon()
                if (ours <= answered or now - started >= self._timing.failure_timeout) and all(
                    address not in ours and now - at > horizon for address, at in strays.items()
                ):
                    break
                await asyncio.sleep(interval)
        finally:
            self._fenced = False
            self._renew(self._clock())

    def _renew(self, now: float) -> None:
        """Extend the owner lease as far as this member's confirmations allow (never shorten it)."""
        if self.state is not State.ACTIVE and self.state is not State.LEAVING:
            return
        lease = self._timing.lease
        if self.is_master:
            alone = len(self.members.members) == 1
            confirmed = self._confirmed_at >= self._resumed and not self._fenced
            until = now + lease if alone or confirmed else 0.0
        else:
            until = self._granted + lease
        need = self._config.min_cluster_size - 1
        if need > 0:
            # Only answers of members that ran our list version: one list at a time on each, so
            # two lineages of the list (a master cut off that kept removing members, and the one
            # that took over from it) cannot both count min_cluster_size members at once.
            acks = sorted((t for u, t in self._quorum.acked.items() if u != self.me.uuid), reverse=True)
            quorate = acks[need - 1] + lease if len(acks) >= need else 0.0
            if quorate > now:
                self._quorum.quorate_at = now
            until = min(until, quorate)
        self.lease_until = max(self.lease_until, until)

    def has_quorum(self) -> bool:
        """True unless ``min_cluster_size`` is set and this member sees fewer members, or has
        not heard enough of them for a failure timeout (while it (re)joins, True: nothing is
        served here, so a write is moved and retried once joined).

        The second half is what a member on the minority side of a split sees: its master
        keeps the silent members in the list (``_within_quorum``), but the answers its lease
        needs of them stay away."""
        need = self._config.min_cluster_size
        if self.state is State.JOINING or need <= 1:
            return True
        if len(self.members.members) - len(self._quorum.kept) < need:
            return False
        return self._clock() - self._quorum.quorate_at <= self._timing.failure_timeout

    def vouch_lapse(self, members: MemberList) -> float:
        """Seconds until no answer of ours can still renew the lease of a member missing from
        ``members`` (0.0 when none can).

        With ``min_cluster_size``, a member's lease rests on answers of members that ran its list
        version (``_renew``). A member removed from ``members`` by a master that could not hear
        it may still hear us, and serve on the strength of our answers: a new owner that asks us
        about its partitions waits this long before we answer, so that it serves only once the
        removed member no longer does (the answer counted from its send time, which came before).
        """
        if not self._quorum.vouched:
            return 0.0
        now = self._clock()
        horizon = self._timing.lease * (1 + 2 * CLOCK_DRIFT)
        for uuid, at in list(self._quorum.vouched.items()):
            if at + horizon <= now:
                del self._quorum.vouched[uuid]
        latest = max((at for uuid, at in self._quorum.vouched.items() if uuid not in members), default=None)
        return 0.0 if latest is None else max(0.0, latest + horizon - now)

    def holds_lease(self) -> bool:
        """True while this member may serve its partitions (see the module docstring)."""
        return self.lease_until > self._clock()

    def lease_left(self) -> float:
        """Seconds this member's owner lease has left (0 when it holds none)."""
        return max(0.0, self.lease_until - self._clock())

    async def _beat(
        self,
        member: Member,
        timeout: float | None = None,
        relayed: tuple[RelayedBeat, ...] = (),
        master: str = "",
        answered: Callable[[HeartbeatReply | None, float], None] | None = None,
    ) -> bool:
        """Heartbeat ``member`` (or probe it); True when it answered as itself, a member of our
        cluster (one that does not count us a member is not heard from: it is not alive *here*).
        With ``relayed`` beats for ``master``, ``answered`` gets the reply (None: the call failed)
        and the send time, before the reply itself is taken."""
        sent = self._clock()
        peer = self._peer(member.address)
        try:
            reply = await peer.heartbeat(
                self.me.uuid,
                self.members.version,
                timeout=timeout or self._timing.heartbeat_interval * 2,
                relayed=relayed,
                master=master,
                list_master=self.members.master_uuid,
            )
        except PeerGridError as exc:
            self._beat_errors[member.uuid] = _strip(exc)
            if isinstance(exc, PeerUnavailableError) and exc.refused:
                self._refused.add(member.uuid)
            if answered is not None:
                answered(None, sent)
            late = getattr(peer, "answered_at", None)  # (PeerClient's; monotonic, as our clock)
            if (
                isinstance(late, float)
                and late > sent
                and member.uuid in self._last_heard
                and not (self.is_master and member.uuid in self._quorum.elsewhere)
            ):
                # It answered an earlier heartbeat after we sent this one: it runs, only seconds
                # behind (an overloaded master, a starved member). Not an ack (no lease comes of
                # it), but not silence: judging it dead would split a cluster that only waits.
                # (Unless what it answered is that it runs in another list: alive, not here.)
                self._last_heard[member.uuid] = max(self._last_heard[member.uuid], late)
                log.debug("member %s: %s answered an earlier heartbeat late", self.me.address, member.address)
            return False
        self._beat_errors.pop(member.uuid, None)
        if answered is not None:
            answered(reply, sent)
        return self._took_reply(member, reply, sent)

    def _took_reply(self, member: Member, reply: HeartbeatReply, sent: float) -> bool:
        """Take ``member``'s answer to a heartbeat sent at ``sent`` (directly, or carried by a
        relay): heard, lease, quorum, newer lists; True when it counts us a member."""
        if reply.uuid and reply.uuid != member.uuid:
            self._refused.add(member.uuid)
            return False  # another process serves that address now: the member is gone
        self._refused.discard(member.uuid)
        if reply.status == HeartbeatStatus.OK:
            self._quorum.elsewhere.pop(member.uuid, None)
            if member.uuid in self._quorum.kept:
                self._quorum.kept = self._quorum.kept - {member.uuid}
            if reply.list_version <= self.members.version:
                self._astray.pop(member.uuid, None)
        elif reply.status == HeartbeatStatus.UNKNOWN_MEMBER and reply.list_version > 0:
            self._quorum.elsewhere.setdefault(member.uuid, self._clock())
        elif reply.status == HeartbeatStatus.UNKNOWN_MEMBER:
            self._astray.setdefault(member.uuid, self._clock())
        if member.uuid in self._last_heard and (reply.status == HeartbeatStatus.OK or not self.is_master):
            # A master judges its members: one that does not count us a member is not alive in
            # our cluster. A member judges only the master and older members, to take over:
            # any answer says they run (if they no longer count us, _check_orphaned finds out).
            self._last_heard[member.uuid] = self._clock()
        if reply.status == HeartbeatStatus.OK and member.uuid in self.members:
            if sent > self._acked.get(member.uuid, 0.0):
                self._acked[member.uuid] = sent
            if (
                member.uuid == self.members.master_uuid
                and (reply.counted or self._config.min_cluster_size > 1)
                and reply.list_version >= self.members.version
                and sent > self._granted
            ):
                # (Not an answer the master marks uncounted, with min_cluster_size 1: back from
                # a stall, it is not yet sure it is still master, ``_lift_fence``; with more,
                # the quorum of answers decides, ``_renew``. Nor one from an older list than
                # ours, which it made: it is no longer master, but took over and went back to
                # the old master as a member.)
                self._granted = sent
            if (
                reply.list_version == self.members.version
                and reply.counted
                and sent > self._quorum.acked.get(member.uuid, 0.0)
            ):
                self._quorum.acked[member.uuid] = sent
            if reply.list_version >= self.members.version:
                # (One still on an older list has not taken ours up: after a take-over, it
                # may be following the master we took over from, back from a pause.)
                self._confirmed_at = max(self._confirmed_at, sent)
            self._renew(self._clock())
        if self._not_counted_by(member, reply):
            return False
        if reply.status == HeartbeatStatus.OK:
            self.saw_version(reply.list_version, member.address)
            return True
        return False

    def _not_counted_by(self, member: Member, reply: HeartbeatReply) -> bool:
        """True (and an orphan check started) when ``member``'s answer says it runs a list
        without us that may mean we were removed: the master's, or a newer one; or, on the
        master, any list without us (of another lineage: ``_outvoted``)."""
        if (
            reply.status == HeartbeatStatus.UNKNOWN_MEMBER
            # Active in a cluster without us (0: it is re-joining; our master re-joining is
            # no longer our master: it took over, say, and went back to the one it took over
            # from, and we are left following it, ``_lift_fence``)
            and (reply.list_version > 0 or member.uuid == self.members.master_uuid)
            and self.state is State.ACTIVE
            and (
                member.uuid == self.members.master_uuid
                or reply.list_version > self.members.version
                or self.is_master
            )
        ):
            if not self._orphan_check:
                self._orphan_check = True
                self._spawn(self._check_orphaned(member))
            return True
        return False

    def _beat_timeout(self) -> float:
        # A late answer still counts: each heartbeat waits almost the failure timeout, not two
        # heartbeats, and its stream is replaced only once nothing came on it for a while
        # (``BeatStream``), so heartbeats queue on it while an overloaded peer catches up.
        timing = self._timing
        return max(2 * timing.heartbeat_interval, timing.failure_timeout - timing.heartbeat_interval)

    async def _heartbeat(self, member: Member) -> None:
        if member.uuid == self._relay.parent:
            await self._beat_relay(member)
        elif member.uuid == self.members.master_uuid:
            self._relay.up_at = self._clock()
            await self._send_up(member, own=False)
        else:
            await self._beat(member, self._beat_timeout())

    # ------------------------------------------------------------------ heartbeat relays
    # (``cluster.relay``: the tree, and why a relayed answer may renew a lease.)
    def _relay_member(self) -> Member | None:
        """The relay this member beats instead of the master (None: it beats the master).

        Only a relay this member has known for a failure timeout: while members join (a hundred
        starting together), a relay admitted in the same batch may still be joining, and would
        answer "not relayed"; its members beat the master directly meanwhile, as every member did
        before relays, and move to their relays once the cluster settles."""
        members, now = self.members, self._clock()
        if self._relay.list_version != (members.version, members.master_uuid):
            self._relay.list_version = (members.version, members.master_uuid)
            fanout = self._config.heartbeat_fanout
            self._relay.tree = ancestors(members.uuids, members.master_uuid, self.me.uuid, fanout)
            self._relay.seen = {u: self._relay.seen.get(u, now) for u in members.uuids}
        tree = self._relay.tree
        settled = bool(tree) and now - self._relay.seen.get(tree[0], now) >= self._timing.failure_timeout
        self._relay.choose(tree if settled else [])
        parent = self._relay.parent
        return self.members.find(parent) if parent else None

    def _relay_patience(self) -> float:
        """How long a relay may carry none of this member's beats before it beats the next one
        up (at last the master): as long as the lease, counted from the last beat the relay
        carried, still outlasts the next beat (an interval, and the lead), so that a beat sent
        now renews it in time; and at least an interval and a half (an answer that takes longer
        than an interval through a deep tree, or on a loaded machine, moves nothing). Longer
        while this member is strained (below)."""
        timing = self._timing
        interval = timing.heartbeat_interval
        patience = max(1.5 * interval, timing.lease - interval - self._relay_lead())
        # While this member's own loop runs late (local health), so, likely, do its relays' on
        # an overloaded machine: a heartbeat more per point, up to the failure timeout, rather
        # than move its beats (and open streams to new relays) at every slow answer (100
        # processes starting on two cores: ~800 such moves, each costing the starved machine).
        return min(patience + self._health * interval, max(patience, timing.failure_timeout))

    def _relay_lead(self) -> float:
        """How long before its relay sends up a member sends it its beat."""
        return self._timing.heartbeat_interval / 10

    def _up_target(self) -> tuple[Member, bool] | None:
        """Whom this member's beat for the master goes to now, and whether that is a relay
        (``Relaying.target``: its own relay, or the next one up that carries, or the master)."""
        timing = self._timing
        # (A relay the master answers within this carries our beats to it: the master hears
        # us before it would judge us, however late its answers come back.)
        heard_within = timing.failure_timeout - timing.heartbeat_interval
        target = self._relay.target(self._clock(), self._relay_patience(), heard_within)
        if target != self._relay.last_target:
            # (A change of relay with a new list is routine; leaving a relay that stopped
            # carrying beats, or coming back to it, is what an operator looks for.)
            level = logging.DEBUG if self._relay.last_target is None else logging.INFO
            log.log(
                level,
                "member %s: sends its heartbeats for the master to %s%s",
                self.me.address,
                self.address_of(target) if target else "the master directly",
                ""
                if target == self._relay.parent
                else f" (its relay {self.address_of(self._relay.parent)} "
                f"carried none for {self._relay_patience():.2g}s, or said it cannot)",
            )
            self._relay.last_target = target
        member = self.members.find(target) if target else None
        if member is not None:
            return member, True
        master = self.master()
        return None if master is None or master.uuid == self.me.uuid else (master, False)

    async def _beat_relay(self, relay: Member) -> None:
        """This member's beat for the master, sent to its relay just before the relay sends up.

        When the relay carried none of this member's beats for ``_relay_patience`` (its beat
        of one interval ago got no answer from the master, or its relay said it does not carry
        beats to this master), the beat goes to the next relay up that carries, at last to the
        master, before the lease runs out; one to the relay then only finds out whether it
        carries beats again. (Checked when the beat is sent, not at the tick: the answer to the
        last beat, sent late in the previous interval, may still be on its way at the tick.)"""
        interval = self._timing.heartbeat_interval
        now = self._clock()
        at = self._relay.parent_at
        delay = 0.0 if at is None else (at - self._relay_lead() - now) % interval
        self._relay.up_at = now + delay
        if delay:
            await asyncio.sleep(delay)
        if self.state not in (State.ACTIVE, State.LEAVING) or relay.uuid != self._relay.parent:
            return
        up = self._up_target()
        if up is not None and up[0].uuid != relay.uuid:
            self._spawn(self._send_up(*up))
            await self._send_up(relay, own=True, probe=True)
        else:
            await self._send_up(relay, own=True)

    async def _send_up(self, up: Member, own: bool, probe: bool = False) -> None:
        """Beat ``up`` (the master, or a relay when ``own``: then this member's own beat travels
        as the first relayed one), carrying the beats held for the master (unless ``probe``: a
        beat to this member's relay that only finds out whether it carries beats again)."""
        batch = [] if probe else self._relay.queue.take()
        beats = [beat for beat, _ in batch]
        if own:
            beats.insert(0, RelayedBeat(self.me.uuid, self.members.version))
        if not beats:
            await self._beat(up, self._beat_timeout())
            return
        master = self.members.master_uuid

        def answered(reply: HeartbeatReply | None, sent: float) -> None:
            answers = () if reply is None else reply.relayed
            if own:
                mine = answers[0] if answers else None
                answers = answers[1:]
                if reply is not None and reply.relay_in is not None and up.uuid == self._relay.parent:
                    self._relay.parent_at = self._clock() + reply.relay_in
                if reply is not None and mine is not None:  # (it carried our beat up)
                    self._relay.heard_from(up.uuid, self._clock(), reply.master_heard)
                self._carried(up, mine, sent, master, evidence=reply is not None, probe=probe)
            # No reply at all: the beats went up and no answer came back (yet): "unanswered".
            self._relay.queue.answer(batch, answers, missing=UNANSWERED if reply is None else None)

        await self._beat(up, self._beat_timeout(), tuple(beats), master, answered)

    def _carried(
        self,
        relay: Member,
        answer: HeartbeatReply | None,
        sent: float,
        master: str,
        evidence: bool,
        probe: bool,
    ) -> None:
        """The master's answer to this member's own beat, carried by ``relay``. When the relay
        says it did not carry it (``evidence``: it has another master, or is still joining), or
        its address refused, the next one up takes this member's beats; and unless this was only
        a ``probe``, this beat goes there at once (a lost or late one waits for the patience,
        as does one the relay carried up without an answer coming back: ``UNANSWERED``)."""
        if answer is UNANSWERED:
            return
        if answer is None or answer.uuid != master or master != self.members.master_uuid:
            if evidence or relay.uuid in self._refused:
                self._relay.refused_by(relay.uuid)
                up = self._up_target()
                if not probe and up is not None and self.state is not State.STOPPED:
                    self._spawn(self._send_up(*up))
            return
        member = self.members.find(master)
        if member is None:
            return
        if answer.status == HeartbeatStatus.OK:
            self._relay.carried_by(relay.uuid, sent)
        self._took_reply(member, answer, sent)

    async def handle_relayed(
        self, beats: tuple[RelayedBeat, ...], master: str
    ) -> tuple[list[HeartbeatReply | None], float | None]:
        """Beats other members sent this one to carry up to ``master``: on the master, its
        answers; on another member of that master, the answers its send up brings back. Also
        the seconds until this member next sends up (a relay's children send just before)."""
        if self.is_master and master == self.me.uuid and self.state in (State.ACTIVE, State.LEAVING):
            me, answers = self.me.uuid, list[HeartbeatReply | None]()
            for beat in beats:
                got = self.handle_heartbeat(beat.uuid, beat.list_version, master)
                answers.append(HeartbeatReply(got.status, got.list_version, uuid=me, counted=got.counted))
            return answers, None
        if self.state is not State.ACTIVE or self.is_master or master != self.members.master_uuid:
            return [None] * len(beats), None
        now = self._clock()
        interval = self._timing.heartbeat_interval
        futures = self._relay.queue.add(beats)
        if (self._relay.up_at - now) % interval > interval / 2 and not self._relay.early:
            # Came just after this member sent up: send again shortly rather than hold them
            # for almost an interval (their senders' leases count from when they sent them).
            self._relay.early = True
            asyncio.get_running_loop().call_later(self._relay_lead(), self._send_early)
        await asyncio.wait(futures, timeout=self._beat_timeout() - interval)
        # Held, or sent up, but not answered yet: "unanswered", not "not relayed" (which would
        # send every member below onto the master directly, just when it answers slowly).
        answers = [f.result() if f.done() and not f.cancelled() else UNANSWERED for f in futures]
        for future in futures:
            future.cancel()  # (a send up from now on leaves it out)
        return answers, (self._relay.up_at - self._clock()) % interval

    def _send_early(self) -> None:
        self._relay.early = False
        if self.state is not State.ACTIVE or not self._relay.queue.pending:
            return
        self._relay_member()
        up = self._up_target()
        if up is not None:
            self._spawn(self._send_up(*up))

    async def _probe(self, member: Member, timeout: float | None = None) -> None:
        """One heartbeat to a member this one does not heartbeat every tick (it is judging it)."""
        if member.uuid in self._probing:
            return
        self._probing.add(member.uuid)
        try:
            # As long as any call: an answer, however late, is evidence the member is alive (on
            # a loaded machine a live member may take longer than a heartbeat interval).
            await self._beat(member, timeout or self._timing.rpc_timeout)
        finally:
            self._probing.discard(member.uuid)

    async def _check_orphaned(self, peer: Member) -> None:
        """A member does not count us a member: we were removed, or left behind, or are behind.

        If its list is a newer version of ours that does not name us, and the members that may
        vouch for it do (``_confirmed``), we were declared dead while we could not answer (a
        pause, a cut): our lease has run out, and we join again as a new member, bringing what
        we served (see ``on_removed``). If a newer list still names us, we were only behind:
        adopt it. If our master no longer counts us and its list is of another instance of the
        cluster (it merged away and we missed the word), join again the same way.
        """
        try:
            try:
                theirs = await self._peer(peer.address).get_members(timeout=self._timing.rpc_timeout)
            except PeerGridError:
                return
            if self.state is not State.ACTIVE:
                return
            if theirs.version > self.members.version and theirs.origin == self.members.origin:
                confirmed = await self._confirmed(theirs)
                if confirmed is not None and self.state is State.ACTIVE:
                    self.adopt(confirmed)  # drops us (``_removed``) if it does not name us
                    return
            if self.is_master:
                if theirs.origin == self.members.origin:
                    await self._outvoted()
                return
            if peer.uuid != self.members.master_uuid:
                return
            # Our master in another instance's list: it merged away (telling us was lost) and
            # the instance it led has no master; we follow it, as do the others. Otherwise a
            # member that still counts us speaks for the instance: we are not orphaned.
            moved = bool(theirs.origin) and theirs.origin != self.members.origin
            others = (
                [] if moved else [m for m in self.members.members if m.uuid not in (self.me.uuid, peer.uuid)]
            )
            for other in others:
                members = await self._members_of(other.uuid)
                if members is not None and self.me.uuid in members and await self._adopt_confirmed(members):
                    return
            if self.state is not State.ACTIVE or self.members.master_uuid != peer.uuid:
                return
            log.warning(
                "member %s: its master %s no longer counts it a member of cluster %r (it left for "
                "another instance of the cluster, or restarted); joining again",
                self.me.address,
                peer.address,
                self._config.cluster,
            )
            self.state = State.JOINING  # one re-join, whatever the next heartbeats say
            self.lease_until = 0.0
            self._on_orphaned()
        finally:
            self._orphan_check = False

    async def _outvoted(self) -> None:
        """As master: join again as a new member (state JOINING) when most of the
        other members of our list run a list of our cluster that another master leads, or that
        does not name us: they follow another master, and we are the one left out.

        A member that took over from a master silent to it (paused, say) while the others
        still heard it, or took up its list only later, leads a lineage of the list that no
        one else follows. Its lease never rested on them (``_renew``); but judged by their
        silence (they answer its probes, from the other list, but send it no heartbeat), it
        would remove them all and serve every partition alone, from empty copies, beside the
        cluster that still serves them (Jepsen's pause scenarios with ``min_cluster_size``
        1: locks granted twice). It goes back to them instead, bringing what it holds. (Its
        list is the newer one, ``TAKEOVER_GAP``: theirs never looks newer to it.)

        Asked when a member answers from a list without us (``_not_counted_by``), when
        members answer our probes but send no heartbeat (``_judge``), and when no member has
        taken our list up for a failure timeout (``_detect_failures``). Members still on the
        list of a master that died (slow to confirm our take-over) do not outvote us: their
        master must answer, leading their list.
        """
        if not self.is_master or self.state is not State.ACTIVE:
            return
        others = [m.uuid for m in self.members.members if m.uuid != self.me.uuid]
        lists = await asyncio.gather(*(self._members_of(uuid) for uuid in others))
        elsewhere = [
            m for m in lists if m is not None and (m.master_uuid != self.me.uuid or self.me.uuid not in m)
        ]
        if len(elsewhere) * 2 <= len(others):
            return
        # Their master must be alive and lead their list: members still on the list of a master
        # that died, not yet sure of our take-over, do not outvote us.
        theirs = max(elsewhere, key=lambda m: m.version)
        master = theirs.find(theirs.master_uuid)
        if master is None or master.uuid == self.me.uuid:
            return
        led = await self._list_at(master.address)
        if (
            led is None
            or led.origin != self.members.origin
            or led.master_uuid != master.uuid
            or led.version < theirs.version
            or not self.is_master
            or self.state is not State.ACTIVE
        ):
            return
        log.warning(
            "member %s: %d of the %d other members of its list (version %d) follow another "
            "master of cluster %r (%s, list version %d); joining them again as a new member",
            self.me.address,
            len(elsewhere),
            len(others),
            self.members.version,
            self._config.cluster,
            master.address,
            theirs.version,
        )
        self.state = State.JOINING  # one re-join, whatever the next heartbeats say
        self.lease_until = 0.0
        self._on_removed()

    def _judge_timeout(self) -> float:
        """How long a member may stay silent before this one judges it: ``failure_timeout``,
        plus a heartbeat per point of bad local health (Lifeguard's local health multiplier)."""
        return self._timing.failure_timeout + self._health * self._timing.heartbeat_interval

    def _detect_failures(self, now: float) -> None:
        """The master judges every member; the others judge only the master.

        A member silent to the master for ``_judge_timeout`` is suspected, not removed: the
        master probes it once more directly (``_judge``), and removes it only if that fails too,
        or if its own heartbeats have not arrived for twice as long (it is alive, but cannot
        reach the master: its lease ran out long ago, and its partitions wait for a new owner).
        When the master goes silent, a member probes the members older than itself, oldest
        first; the oldest member that hears from nobody older takes over.
        """
        timeout = self._judge_timeout()
        if self.is_master:
            # (A member the master's rotation reaches is heard, but its lease needs its own
            # heartbeats: one whose heartbeats stay away is judged too.) The probe starts two
            # heartbeats before the timeout, so that a dead member goes at the timeout; and an
            # interval before its lease has certainly run out, so that one whose address refuses
            # goes then (``_gone``).
            fresh = self._fresh
            interval = self._timing.heartbeat_interval
            suspect = min(
                max(timeout - 2 * interval, timeout / 2), max(2 * interval, self._lease_horizon() - interval)
            )
            silent = [
                m
                for m in self.members.members
                if m.uuid != self.me.uuid
                and (
                    now - self._last_heard.get(m.uuid, now) > (2 * timeout if m.uuid in fresh else suspect)
                    or now - self._beat_from.get(m.uuid, now) > 2 * timeout
                )
            ]
            if silent and not self._judging:
                self._judging = True
                self._spawn(self._judge(silent, timeout))
            elif (
                self._confirmed_at < self._list_checked < now - timeout
                and len(self.members.members) > 1
                and not self._judging
            ):
                # No member has taken our list up in a failure timeout, yet none is silent:
                # they answer and heartbeat us from an older list, of the master we took over
                # from, perhaps (``_outvoted``). Asked once a failure timeout.
                self._list_checked = now
                self._spawn(self._outvoted())
            return
        master = self.members.master_uuid
        quiet = now - self._last_heard.get(master, now) > 2 * self._timing.heartbeat_interval
        if not quiet:
            self._master_quiet = False
            return
        uuids = self.members.uuids
        older = [u for u in uuids[: uuids.index(self.me.uuid)] if u != master]
        if not self._master_quiet:
            # We have not been listening to the older members: count them heard when the
            # master was, and probe them from now on.
            self._master_quiet = True
            log.info(
                "member %s: the master %s has not answered for %.1fs (%s); probing older members",
                self.me.address,
                getattr(self.members.find(master), "address", master),
                now - self._last_heard.get(master, now),
                self._beat_errors.get(master, "no error: its answers are late"),
            )
            since = self._last_heard.get(master, now)
            for uuid in older:
                self._last_heard[uuid] = max(self._last_heard.get(uuid, since), since)
        probes = 0
        for uuid in older:  # oldest first, up to the first one we hear, two a tick at most
            heard = now - self._last_heard.get(uuid, now) <= 2 * self._timing.heartbeat_interval
            if probes >= 2 or (heard and not self._departed(uuid, now, timeout)):
                break
            member = self.members.find(uuid)
            if member is not None:
                probes += 1
                self._spawn(self._probe(member))
        gone = {u for u in (master, *older) if self._absent(u, now, timeout)}
        if len(gone) == len(older) + 1 and not self._judging:
            if self._most_of_cluster(gone) or (master not in self._refused and self._strained(now)):
                # Silence from most of the cluster says more likely that this member is at
                # fault (starved of CPU, or cut off) than that they all died: as the master
                # does (``_unless_at_fault``), wait the longest timeout local health allows.
                # So does a silent master while this member's own loop runs late: the machine
                # is overloaded, and the master likely starved too (unless its address refuses).
                timeout = self._longest_timeout()
                if not all(self._absent(u, now, timeout) for u in gone):
                    return
            self._judging = True
            self._spawn(self._take_over(gone, timeout))

    def _departed(self, uuid: str, now: float, timeout: float) -> bool:
        """Whether ``uuid`` has answered for ``timeout`` from a list that does not name this
        member (``_QuorumAnswers.elsewhere``), or given a newer list whose master is not in ours
        (``_astray``): it runs, but went on in another lineage of the list, or another
        instance, and will not lead or take over ours."""
        since = min(self._quorum.elsewhere.get(uuid, math.inf), self._astray.get(uuid, math.inf))
        return now - since >= timeout

    def _absent(self, uuid: str, now: float, timeout: float) -> bool:
        """For a take-over: ``uuid`` silent for ``timeout``, or departed (``_departed``).

        A member whose master is gone waits for the older members to take over; one that
        answers from another lineage never will. Waiting for it left members in limbo (Jepsen's
        split-kill, the victim the master on the larger side: the smaller side took over and
        dropped the larger side's members as gone on elsewhere; they kept the dead master's
        list, whose next oldest member lived on in the other lineage: no master for ever)."""
        return now - self._last_heard.get(uuid, now) > timeout or self._departed(uuid, now, timeout)

    def _most_of_cluster(self, silent: set[str]) -> bool:
        """Whether ``silent`` is more than half of the other members (and more than one)."""
        others = len(self.members.members) - 1
        return len(silent) >= 2 and len(silent) > others / 2

    def _strained(self, now: float) -> bool:
        """Whether this member's loop ran late within the longest timeout: its process is
        overloaded, and so, likely, are others on its machine (their silence may be starvation)."""
        return now - self._strained_at <= self._longest_timeout()

    def _longest_timeout(self) -> float:
        """The longest a judgement waits: ``failure_timeout`` at the worst local health."""
        return self._timing.failure_timeout + MAX_HEALTH * self._timing.heartbeat_interval

    async def _take_over(self, gone: set[str], timeout: float) -> None:
        """Become master, without ``gone`` (the master and every older member, all silent).

        The younger members stay: this member did not hear them every tick, so it judges them
        from now on as a master judges members that just joined (twice the timeout to send a
        first heartbeat). One cut off from everyone thus drops the others soon, as it must (two
        instances sharing a member never merge), and one that took over from a dead master keeps
        every live member, however slow they are to answer.
        """
        version, joined = self.members.version, self.joined_version
        try:
            # The older members were probed a few at a time: ask each once more, and the master,
            # before deciding (any answer, even "you are not a member", says it runs).
            older = [m for m in self.members.members if m.uuid in gone]
            if any(await asyncio.gather(*(self._beat(m, self._timing.rpc_timeout) for m in older))):
                return
            if await self._master_heard_elsewhere(gone, timeout, answer_needed=self._most_of_cluster(gone)):
                return
            now = self._clock()
            if (
                # (A leaving member takes over too: it may hold the last copies of the dead
                # master's partitions, and hands them over only once it is removed.)
                self.state not in (State.ACTIVE, State.LEAVING)
                or (self.members.version, self.joined_version) != (version, joined)
                or self.members.master_uuid not in gone
                or not all(self._absent(u, now, timeout) for u in gone)
            ):
                return  # a newer list came, we were dropped (and joined again), or the master spoke
            departed = {u for u in gone if self._departed(u, now, timeout)}
            log.warning(
                "member %s: the master and every older member are silent%s; taking over",
                self.me.address,
                f" or gone on in another lineage ({len(departed)} of them)" if departed else "",
            )
            for member in self.members.members:
                if member.uuid not in gone and member.uuid != self.me.uuid:
                    self._last_heard[member.uuid] = now
                    self._beat_from[member.uuid] = now
                    self._fresh.add(member.uuid)
            self._remove(gone, self.me.uuid, timeout, version=self.members.version + TAKEOVER_GAP)
            need = self._config.min_cluster_size
            if departed and self.is_master and len(self.members.members) < need:
                # Fewer than min_cluster_size without members that live on elsewhere: a lineage
                # that lost its quorum for good (as ``_within_quorum`` marks one). It admits no
                # one; the merge compares it with the other (``cluster.merge``): whichever
                # served last takes the other's members in (``outlive``).
                self._quorum.lost = True
        finally:
            self._judging = False

    async def _master_heard_elsewhere(
        self, gone: set[str], timeout: float, answer_needed: bool = False
    ) -> bool:
        """Whether a younger member still hears the master, which this one does not (SWIM's
        indirect probe, for the master): a master starved of CPU, or cut off from this member
        only, is not replaced. Up to ``TAKEOVER_WITNESSES`` members, chosen at random, are asked
        within two heartbeats; one that does not answer says nothing (it may be dead or cut off
        with the master: a take-over must not wait for it) unless ``answer_needed``: a member
        about to remove most of the cluster, that hears none of the witnesses either, is the
        likelier one at fault (a process starved of CPU hears no one), and does not take over."""
        younger = [m for m in self.members.members if m.uuid not in gone and m.uuid != self.me.uuid]
        witnesses = _random.sample(younger, min(TAKEOVER_WITNESSES, len(younger)))
        if not witnesses:
            return False
        answered = 0
        version = self.members.version
        recent = max(timeout - 2 * self._timing.heartbeat_interval, timeout / 2)

        async def ask(member: Member) -> str | None:
            nonlocal answered
            try:
                reply = await self._peer(member.address).heartbeat(
                    self.me.uuid, version, timeout=2 * self._timing.heartbeat_interval
                )
            except PeerGridError:
                return None
            if reply.uuid and reply.uuid != member.uuid:
                return None
            answered += 1
            if self._not_counted_by(member, reply):  # we were likely removed: no take-over
                return f"{member.address} holds a newer list without this member"
            if reply.status != HeartbeatStatus.OK:
                return None
            # A newer list is pulled; the take-over goes on unless the witness hears its master
            # (a newer list's may be another: then this member is behind, not the master dead).
            self.saw_version(reply.list_version, member.address)
            heard = reply.master_heard
            if reply.list_version >= version and heard is not None and heard < recent:
                return f"{member.address} heard from its master {heard:.1f}s ago"
            return None

        heard = [why for why in await asyncio.gather(*(ask(m) for m in witnesses)) if why]
        if not heard and answer_needed and not answered:
            heard = ["none of the younger members asked answered either (this member is likelier at fault)"]
        if heard:
            log.info(
                "member %s: the master is silent to this member, but %s; not taking over",
                self.me.address,
                heard[0],
            )
        return bool(heard)

    async def _judge(self, silent: list[Member], timeout: float) -> None:
        """Probe the members silent to the master; remove those that do not answer."""
        try:
            # Two heartbeat intervals: the member has been silent for most of a timeout already.
            started = self._clock()
            quiet = {m.uuid: started - self._last_heard.get(m.uuid, started) for m in silent}
            await asyncio.gather(*(self._probe(m, 2 * self._timing.heartbeat_interval) for m in silent))
            # Suspected before the timeout: one that did not answer goes once silent for all of it,
            # unless no process serves its address any more and its lease has run out (``_gone``).
            now = self._clock()
            due = max(
                (
                    self._removable_at(m.uuid, timeout)
                    for m in silent
                    if self._last_heard.get(m.uuid, now) < started and not self._gone(m.uuid, now)
                ),
                default=now,
            )
            if now < due:
                # (A hair past ``due``: ``_gone`` compares strictly.)
                await asyncio.sleep(min(due - now + 0.001, 2 * self._timing.heartbeat_interval))
            # A leaving master judges on until its final leave: it hands its partitions over only
            # once the dead members' partitions have failed over (it may hold their last copies).
            if not self.is_master or self.state not in (State.ACTIVE, State.LEAVING):
                return
            now = self._clock()
            dead: set[str] = set()
            # Several members silent at once, or this master running late, is what an overloaded
            # machine looks like (a hundred processes starting on two cores starve some for
            # seconds): without evidence that no process serves a member's address, it is
            # removed only after the longest timeout. A refused connection is that evidence (a
            # starved or paused process's kernel still accepts connections): a killed member
            # goes at the failure timeout, whatever else is silent. (So does one whose probes are
            # answered but whose heartbeats stay away: an overloaded master reads them late.)
            cautious = len(silent) >= 2 or self._strained(now)
            astray: set[str] = set()  # alive (they answer), but not heartbeating us: following whom?
            for member in silent:
                if member.uuid not in self.members:
                    continue
                silence = now - self._last_heard.get(member.uuid, now)
                limit = self._longest_timeout() if cautious and member.uuid not in self._refused else timeout
                if silence > limit or self._gone(member.uuid, now):
                    dead.add(member.uuid)
                elif silence > timeout:
                    if silence - timeout < 2 * self._timing.heartbeat_interval:  # (said once)
                        log.info(
                            "member %s: %s has been silent for %.1fs (timeouts, not refused: it may be "
                            "starved of CPU); it goes if still silent at %.0fs",
                            self.me.address,
                            member.address,
                            silence,
                            limit,
                        )
                elif now - self._beat_from.get(member.uuid, now) > 2 * (
                    self._longest_timeout() if cautious else timeout
                ):
                    log.warning(
                        "member %s: %s answers probes but its heartbeats have not arrived for %.1fs",
                        self.me.address,
                        member.address,
                        now - self._beat_from.get(member.uuid, now),
                    )
                    dead.add(member.uuid)
                    astray.add(member.uuid)
                else:
                    # (Probed early, to remove a killed member as soon as its lease ran out: a
                    # short silence that a probe ends is routine on a busy machine.)
                    log.log(
                        logging.INFO if quiet[member.uuid] > timeout / 2 else logging.DEBUG,
                        "member %s: %s was silent for %.1fs but answered a probe; not removed",
                        self.me.address,
                        member.address,
                        quiet[member.uuid],
                    )
            if astray or dead & self._quorum.elsewhere.keys():
                await self._outvoted()
                if self.state is not State.ACTIVE:
                    return
            dead = self._within_quorum(self._unless_at_fault(dead, now), now)
            if dead:
                self._remove(dead, self.me.uuid, timeout)
        finally:
            self._judging = False

    def _gone(self, uuid: str, now: float) -> bool:
        """Whether ``uuid`` may be removed before the failure timeout: no process serves its
        address (its last heartbeat or probe was refused, or another process answered there) and
        its owner lease has certainly run out. Its lease counts from when it sent a heartbeat
        the master answered, before that heartbeat reached the master (``_beat_from``); so at
        ``lease * (1 + 2 * CLOCK_DRIFT)`` after the last one reached the master it has stopped
        serving, whatever the drift of the two clocks (``Timing.lease``: ~3 s by default, where
        the failure timeout is 5): a killed member's partitions fail over ~2 s sooner, and a
        silent one whose address still accepts connections (paused, starved, cut off) waits the
        timeout, as before."""
        return now > self._removable_at(uuid, float("inf"))

    def _lease_horizon(self) -> float:
        """How long after its last heartbeat reached the master a member has certainly stopped
        serving: its lease, stretched by the clocks' drift bound."""
        return self._timing.lease * (1 + 2 * CLOCK_DRIFT)

    def _removable_at(self, uuid: str, timeout: float) -> float:
        """When a silent member may be removed: ``timeout`` after it was last heard, or, when
        its address refuses, once its lease has certainly run out (``_gone``)."""
        heard = self._last_heard.get(uuid, self._clock())
        at = heard + timeout
        if uuid in self._refused and uuid in self._beat_from:
            at = min(at, max(heard, self._beat_from[uuid]) + self._lease_horizon())
        return at

    def _unless_at_fault(self, dead: set[str], now: float) -> set[str]:
        """``dead``, unless it is most of the cluster: when more than half of the other members
        went silent at once, the master is more likely the one at fault (starved of CPU, or cut
        off from them) than they all. It then judges with the longest timeout local health
        allows (Lifeguard), and removes only those silent for longer than that: a bounded delay.
        """
        if not self._most_of_cluster(dead):
            return dead
        others = len(self.members.members) - 1
        longest = self._longest_timeout()
        overdue = {u for u in dead if now - self._last_heard.get(u, now) > longest}
        if overdue != dead:
            self._health = MAX_HEALTH
            if now - self._at_fault_warned < self._timing.failure_timeout:
                return overdue
            self._at_fault_warned = now
            log.warning(
                "member %s: %d of the %d other members went silent at once; this member is more "
                "likely at fault (overloaded, or cut off): removing them only after %.0fs of silence",
                self.me.address,
                len(dead),
                others,
                longest,
            )
        return overdue

    def _within_quorum(self, dead: set[str], now: float) -> set[str]:
        """``dead``, less the live members a master without quorum may not drop.

        With ``min_cluster_size``, a master that would be left with fewer members than that
        has no quorum, and its judgement that the silent ones died is no better than theirs
        that it did: on the minority side of a split it hears none of the majority. Dropped,
        a member of the majority that had not yet taken up the majority's own list (the
        take-over there) would take ours at the heal, join this side again as a new member
        and leave its copies behind, the only copies of writes the majority acknowledged
        before anyone there noticed the split; this side, quorate again with it, would serve
        older ones (Jepsen's ``split-2-3``: lock tokens granted twice, a counter read back
        lower). So they stay in the list (``kept``), counted toward no quorum
        (``has_quorum``), and this master admits no one meanwhile (``_quorum_lost``), until
        they answer again, or for ``merge_horizon`` at most. Removed all the same: a member
        no process serves any more (``_gone``: it has no copies to lose; a process restarted
        there is admitted as a new member), and one that answers from a list without us
        (``elsewhere``: it went on in the other side's lineage, whose lists never name us
        master, and never takes one of ours that drops it). A list that falls below
        ``min_cluster_size`` that way is a lineage that lost its quorum for good: it admits no
        one (``lost``), and its members join the other instance when the merge finds it
        (``cluster.merge``).
        """
        need = self._config.min_cluster_size
        # Every member silent now counts, not only those due this round: removing two of three
        # gone silent together, because the third was heard a little later, would leave a list
        # of min_cluster_size that drops it a moment after (and drops the two with it).
        quiet = dead | self._quiet()
        if need <= 1 or len(self.members.members) - len(quiet) >= need:
            self._quorum.kept -= dead
            return dead
        gone = {u for u in dead if self._gone(u, now)}
        # (Not while an orphan check runs, for a couple of heartbeats: if they answered from a
        # newer list that most of our members hold, we follow them there, which heals at once;
        # dropped, they would have to wait for a merge.)
        patience = 2 * self._timing.heartbeat_interval if self._orphan_check else 0.0
        elsewhere = {u for u, since in self._quorum.elsewhere.items() if now - since >= patience}
        # And not for ever: past ``merge_horizon`` (the longest split whose writes a merge keeps
        # in any case) a member still silent is taken for lost, so that a majority gone for good
        # without refusing connections (hosts that vanished) does not leave the rest unable to
        # admit anyone again.
        horizon = self._timing.merge_horizon
        lost = {u for u in dead if now - self._last_heard.get(u, now) > horizon}
        removable = gone | lost | (dead & elsewhere)
        kept = frozenset(dead - removable) | (self._quorum.kept - dead)
        if removable - gone - lost and len(self.members.members) - len(removable) < need:
            self._quorum.lost = True
        if kept - self._quorum.kept:
            log.warning(
                "member %s: removing the %d silent members (%s) would leave fewer than "
                "min_cluster_size=%d; they stay in the list, and no one is admitted, until they "
                "answer (this side has no quorum: it serves nothing meanwhile)",
                self.me.address,
                len(kept),
                ", ".join(sorted(getattr(self.members.find(u), "address", u) for u in kept)),
                need,
            )
        self._quorum.kept = kept
        return removable

    def _remove(
        self, uuids: set[str], master_uuid: str, timeout: float | None = None, version: int | None = None
    ) -> None:
        now = self._clock()
        for uuid in uuids:
            member = self.members.find(uuid)
            gone = self._gone(uuid, now)
            log.warning(
                "member %s: %s was not heard from for %.1fs%s; removing it",
                self.me.address,
                member.address if member else uuid,
                now - self._last_heard[uuid] if gone else timeout or self._timing.failure_timeout,
                f" and its address refuses ({self._beat_errors.get(uuid, 'another process answers')})"
                if gone
                else "",
            )
        # Gone without leaving (dead, paused, or cut off: maybe a split): the list says when, so
        # that members journal their writes for a merge, those that join later too.
        unannounced = any(not m.leaving for m in self.members.members if m.uuid in uuids)
        lost_at = round(time.time(), 3) if unannounced else None  # (ms on the wire)
        self.adopt(
            self.members.without(frozenset(uuids), master_uuid=master_uuid, version=version, lost_at=lost_at)
        )
        self.publish()

    # ------------------------------------------------------------------ leaving
    async def handle_leave(self, uuid: str, final: bool) -> None:
        """A member asks to leave; the master marks it leaving, or removes it.

        Only the member itself may ask: the master calls it back at the address in its list
        and it must answer that it is leaving (``ClusterError`` if not), so a peer cannot make
        another member leave in its name.
        """
        if not self.is_master:
            raise ClusterError("this member is not the master; ask the master to leave")
        member = self.members.find(uuid)
        if member is None:
            return
        if not await self._says_leaving(member):
            raise ClusterError(
                f"refused to remove member {uuid}: at {member.address} it does not say it is leaving "
                "(only a member itself may ask to leave)"
            )
        if final:
            self.adopt(self.members.without(frozenset({uuid})))
        elif not member.leaving:
            self.adopt(self.members.with_member(Member(member.uuid, member.address, member.weight, True)))
        self.publish()

    async def _says_leaving(self, member: Member) -> bool:
        try:
            reply = await self._peer(member.address).heartbeat(
                self.me.uuid, self.members.version, timeout=self._timing.rpc_timeout
            )
        except PeerGridError:
            return False
        return reply.uuid == member.uuid and reply.leaving

    async def request_leave(self, final: bool) -> None:
        """Ask the master to mark this member leaving (``final=False``) or remove it."""
        self.state = State.LEAVING
        deadline = self._clock() + self._timing.rpc_timeout * 3
        while self._clock() < deadline:
            if self.is_master:
                await self._leave_as_master(final)
                return
            master = self.master()
            if master is None:
                return
            try:
                await self._peer(master.address).leave(self.me.uuid, final, timeout=self._timing.rpc_timeout)
            except PeerUnavailableError:
                await asyncio.sleep(self._timing.heartbeat_interval)
            except PeerGridError as exc:
                log.debug("leave request to %s failed: %s", master.address, exc)
                await asyncio.sleep(self._timing.heartbeat_interval)
            else:
                return

    async def _leave_as_master(self, final: bool) -> None:
        if final:
            others = [m.uuid for m in self.members.members if m.uuid != self.me.uuid]
            final_list = self.members.without(
                frozenset({self.me.uuid}), master_uuid=others[0] if others else ""
            )
            self.members = final_list
            # Wait for the publication: the next master learns of its role from it.
            await asyncio.gather(*(self._publish_to(m.address, final_list) for m in final_list.members))
            return
        member = self.members.find(self.me.uuid)
        if member is not None and not member.leaving:
            self.adopt(self.members.with_member(Member(member.uuid, member.address, member.weight, True)))
            self.publish()

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def reset_for_rejoin(self) -> None:
        """Forget the cluster, to join it again as a new member."""
        self.state = State.JOINING
        self._relay.queue.fail_all()
        self._relay.choose([])
        self._relay.list_version, self._relay.tree, self._relay.seen = (-1, ""), [], {}
        self.members = MemberList(0, "", ())
        self.since.clear()
        self._last_heard.clear()
        self._beat_from.clear()
        self._fresh.clear()
        self._joiners.clear()
        self._acked.clear()
        self._granted = 0.0
        self._confirmed_at = 0.0  # (as a new member: ``adopt`` says when it counts)
        # Our answers may still renew the leases of the members we answered: the vouches stay
        # (``vouch_lapse``), or the cluster we join next could count us while they serve.
        self._quorum = _QuorumAnswers(vouched=self._quorum.vouched)
        self._astray.clear()
        self.lease_until = 0.0

    async def stop(self) -> None:
        """Stop heartbeats and background calls."""
        self.state = State.STOPPED
        self._relay.queue.fail_all()
        tasks = [t for t in (self._ticker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _strip(exc: Exception) -> str:
    text = str(exc)
    return text.split("refused: ", 1)[-1]
