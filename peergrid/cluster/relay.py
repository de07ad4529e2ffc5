"""Heartbeat relays: the master hears every member through a tree of constant fanout.

The master renews every member's owner lease, so it must hear from every member each
heartbeat interval; beaten directly, that is N messages a second on one member, the one cost
of the membership protocol that grew with the cluster. With relays, the few oldest members
after the master beat it directly (``MASTER_FANOUT``), and every other member beats its
*relay*, an older member, which carries the beats it received up with its own (to the
master, or to its own relay) and hands each member the master's answer to its own beat.
Every member then receives at most ``fanout`` heartbeat messages an interval (the master at
most ``MASTER_FANOUT``), and sends one.

Why a relayed answer may renew a lease: the member counts its lease from the time it sent
the beat (as for a direct one), and the master counts the member heard when the relayed beat
reaches it, which is later; so the master's judgement ("silent for ``failure_timeout``")
still comes after the member's lease ran out, however long the relays held the beat. A relay
carries only beats it received, and only to the master they name; a relay that fails to
carry them answers "not relayed", and the member beats the master directly until its relay
carries its beats again. A relay that carried a beat up but got no answer in time says so
("unanswered"): the member waits as for a lost answer; and it stays with a relay that still
replies and that the master still answers, however late (``Relaying.slow_above``). A slow
master answers its relays late; had their members taken that for a dead relay and beaten it
directly, the master would get one message per member rather than per relay just when it is
slowest (100 members starting together on two cores).

The tree is a pure function of the member list (oldest first, the master at the root):
see ``relay_parent``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from peergrid.protocol import HeartbeatReply, RelayedBeat

#: How many members beat the master directly (fewer if ``heartbeat_fanout`` is smaller): fewer
#: than a relay carries for, because the master also admits, judges, and answers every new
#: owner's questions, and each message it receives costs it about half a millisecond of CPU
#: (gRPC's threads wake for it; measured idle, 10 members: the master at 1.40-1.48 % of a core
#: with ten members beating it, 0.93-1.02 % with four).
MASTER_FANOUT = 4


def relay_parent(uuids: Sequence[str], master: str, me: str, fanout: int) -> str | None:
    """The uuid of the member that carries ``me``'s heartbeats up to ``master``; None when
    ``me`` beats the master directly (or is the master, or is not in ``uuids``).

    ``uuids`` is the member list, oldest first; the tree is rooted at the master wherever it
    stands in it (after a take-over the oldest live member is the master anyway). Positions
    ``1..k`` beat the master (``k = min(fanout, MASTER_FANOUT)``), and position ``p > k`` the
    one at ``(p - k - 1) // fanout + 1``: every other member relays for up to ``fanout``,
    filled in order, so that a join (appended at the young end) moves no one's relay.
    """
    if me == master or me not in uuids or master not in uuids:
        return None
    order = [master, *(u for u in uuids if u != master)]
    position, direct = order.index(me), min(fanout, MASTER_FANOUT)
    return None if position <= direct else order[(position - direct - 1) // fanout + 1]


@dataclass
class RelayQueue:
    """Beats a relay holds for the master, each with the future its sender's call awaits."""

    pending: list[tuple[RelayedBeat, asyncio.Future[HeartbeatReply | None]]] = field(default_factory=list)

    def add(self, beats: Sequence[RelayedBeat]) -> list[asyncio.Future[HeartbeatReply | None]]:
        """Hold ``beats`` until the next send up; the futures resolve to the master's answers."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[HeartbeatReply | None]] = []
        for beat in beats:
            future: asyncio.Future[HeartbeatReply | None] = loop.create_future()
            self.pending.append((beat, future))
            futures.append(future)
        return futures

    def take(self) -> list[tuple[RelayedBeat, asyncio.Future[HeartbeatReply | None]]]:
        """The beats to send up now: every one held whose sender still waits for its answer."""
        batch = [(beat, future) for beat, future in self.pending if not future.done()]
        self.pending = []
        return batch

    @staticmethod
    def answer(
        batch: Sequence[tuple[RelayedBeat, asyncio.Future[HeartbeatReply | None]]],
        answers: Sequence[HeartbeatReply | None],
        missing: HeartbeatReply | None = None,
    ) -> None:
        """Hand each sender the master's answer to its beat (None: not carried); ``missing``
        for those the answers do not reach (``UNANSWERED``: the send up got no reply)."""
        for i, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(answers[i] if i < len(answers) else missing)

    def fail_all(self) -> None:
        """Answer every beat held "not relayed" (this member stops relaying: it left, or rejoins)."""
        self.answer(self.take(), ())


def ancestors(uuids: Sequence[str], master: str, me: str, fanout: int) -> list[str]:
    """``me``'s relay, that relay's relay, and so on up to (not including) the master: whom
    ``me`` may beat for the master, nearest first (empty: it beats the master directly)."""
    chain: list[str] = []
    at = relay_parent(uuids, master, me, fanout)
    while at is not None:
        chain.append(at)
        at = relay_parent(uuids, master, at, fanout)
    return chain


@dataclass
class Relaying:
    """A member's side of the relay tree: the beats it holds for the master, and its relays.

    The member beats its relay (the nearest ancestor); when that one carries none of its beats
    for a while (dead, paused, cut off, or of another master), the next ancestor up, and at
    last the master itself: a dead relay moves its members' beats one level up, not all of
    them onto the master. A beat to the relay still goes out meanwhile, to see it carry again.
    """

    queue: RelayQueue = field(default_factory=RelayQueue)
    chain: list[str] = field(default_factory=list)  # ancestors, nearest first ("" after: the master)
    list_version: tuple[int, str] = (-1, "")  # the member list ``tree`` was derived from
    tree: list[str] = field(default_factory=list)  # this member's ancestors in that list
    seen: dict[str, float] = field(default_factory=dict)  # uuid -> when this member first listed it
    carried: dict[str, float] = field(
        default_factory=dict
    )  # relay -> send time of the latest own beat it carried
    tried: dict[str, float] = field(default_factory=dict)  # relay -> when this stretch of beating it began
    parent_at: float | None = None  # when the relay next sends up (this member's clock), from its answers
    up_at: float = 0.0  # when this member next sends its beats (and those it holds) up
    early: bool = False  # an extra send up is scheduled for beats that came just after the last
    last_target: str | None = None  # whom the last beat for the master went to ("": the master)
    # relay -> (when its last reply carrying our beat came, its ``master_heard`` then): how well
    # it hears the master itself.
    views: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def parent(self) -> str:
        """This member's relay ("": it beats the master directly)."""
        return self.chain[0] if self.chain else ""

    def choose(self, chain: list[str]) -> None:
        """Beat along ``chain`` from now on; relays new to it start with a clean record."""
        if chain != self.chain:
            if self.parent != (chain[0] if chain else ""):
                self.parent_at = None
            self.chain, self.last_target = chain, None
            self.carried = {u: t for u, t in self.carried.items() if u in chain}
            self.tried = {u: t for u, t in self.tried.items() if u in chain}
            self.views = {u: v for u, v in self.views.items() if u in chain}

    def target(self, now: float, patience: float, heard_within: float = 0.0) -> str:
        """Whom to beat now: the nearest ancestor that carried one of this member's beats
        within ``patience`` seconds of when this member began beating it, or that the master
        itself answers within ``heard_within`` (``slow_above``); "" for the master."""
        for relay in self.chain:
            began = self.tried.setdefault(relay, now)
            quiet = now - max(self.carried.get(relay, float("-inf")), began)
            if quiet <= patience or self.slow_above(relay, now, patience, heard_within):
                return relay
        return ""

    def slow_above(self, relay: str, now: float, patience: float, heard_within: float) -> bool:
        """Whether ``relay`` still carries this member's beats up although their answers are
        late: it replied within ``patience`` (carrying the beat, answered or not yet), and its
        master answered its own beats within ``heard_within`` seconds. Then the master hears
        this member through it, only answers slowly; beating the master directly would bring
        no answer sooner, and add one message per member to the load of a master that is slow
        already (a hundred members starting together on two cores). A dead or paused relay
        replies nothing, a cut-off one's master answers it nothing, one of another master
        refuses: those are left after ``patience``, as before."""
        view = self.views.get(relay)
        if view is None:
            return False
        at, heard = view
        return now - at <= patience and heard <= heard_within

    def heard_from(self, relay: str, at: float, master_heard: float | None) -> None:
        """``relay`` replied at ``at``, carrying this member's beat (answered or not yet),
        and says its master last answered it ``master_heard`` seconds before."""
        if master_heard is not None and relay in self.chain:
            self.views[relay] = (at, master_heard)

    def carried_by(self, relay: str, sent: float) -> None:
        """``relay`` carried this member's beat sent at ``sent`` (and the master answered OK);
        when it is the member's own relay, ancestors tried meanwhile start afresh next time."""
        self.carried[relay] = max(self.carried.get(relay, float("-inf")), sent)
        if relay == self.parent:
            self.tried = {relay: self.tried.get(relay, sent)}

    def refused_by(self, relay: str) -> None:
        """``relay`` said it does not carry beats to this member's master (or is gone): the
        next ancestor up from now on, until it carries one again."""
        self.tried[relay] = self.carried[relay] = float("-inf")
        self.views.pop(relay, None)
