"""The subscriber's side of events: one stream per (owner, map) to every other member.

For every map that has a near cache or an entry listener here, this member
subscribes to that map's events on every other member (each owns some of
its partitions). Per stream it checks each partition's sequence numbers: a
number that does not follow the last one, a heartbeat whose last number
differs from ours, or a stream that breaks, means events were missed, and the
receivers hear of the gap (a near cache drops what may be stale; listeners
report it). An owner's heartbeats renew its lease (near caches serve its
entries only while the lease holds); an owner sends them only while it holds
its own owner lease (and, with ``min_cluster_size``, sees a quorum), so a near
cache stops serving the entries of an owner that may have been replaced
within ``max_staleness``, whatever else it hears from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from peergrid.errors import PeerGridError, RemoteError
from peergrid.events.model import EventBatch
from peergrid.protocol import MemberList

log = logging.getLogger("peergrid.events")


class Receiver(Protocol):
    """Something that consumes a map's events (a near cache, a listener hub)."""

    def on_alive(self, owner: str, now: float) -> None: ...
    def on_events(self, owner: str, batch: EventBatch) -> None: ...
    def on_gap(self, owner: str, partitions: Iterable[int]) -> None: ...


class Source(Protocol):
    """Opens event streams (``peergrid.transport.PeerClient.subscribe``)."""

    def subscribe(
        self, name: str, values: bool, entries: bool, heartbeat_interval: float
    ) -> AsyncIterator[EventBatch]: ...


@dataclass
class _Interest:
    receivers: list[Receiver] = field(default_factory=list)
    values: bool = False
    entries: bool = False
    heartbeat: float = 1.0


@dataclass
class _StreamState:
    seqs: dict[int, int] = field(default_factory=dict)
    owned: set[int] = field(default_factory=set)
    heard: bool = False  # a message arrived: receivers renewed the owner's lease on its word


class Subscriptions:
    """This member's event subscriptions. Loop thread only."""

    def __init__(
        self,
        me: str,
        source: Callable[[str], Source | None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
        retry_interval: float,
        owned_by: Callable[[str], Iterable[int]] = lambda owner: (),
        min_heartbeat: float = 0.0,
    ) -> None:
        self._me = me
        self._min_heartbeat = min_heartbeat  # owners refuse to heartbeat more often
        self._source = source
        self._owned_by = owned_by  # the partitions a member owns in this member's table
        self._spawn = spawn
        self._retry = retry_interval
        self._interests: dict[str, _Interest] = {}
        self._streams: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._members: MemberList | None = None
        self._established: dict[tuple[str, str], asyncio.Event] = {}  # first heartbeat received
        self.gaps = 0  # partitions reported as gapped, for statistics

    # ------------------------------------------------------------------ interest
    def add(self, name: str, receiver: Receiver, values: bool, entries: bool, heartbeat: float) -> None:
        """Send ``name``'s events from every other member to ``receiver``, with heartbeats every
        ``heartbeat`` seconds (or ``min_heartbeat``, if more)."""
        heartbeat = max(heartbeat, self._min_heartbeat)
        interest = self._interests.setdefault(name, _Interest(heartbeat=heartbeat))
        if receiver not in interest.receivers:
            interest.receivers.append(receiver)
        changed = (values and not interest.values) or (entries and not interest.entries)
        changed = changed or heartbeat < interest.heartbeat
        interest.values |= values
        interest.entries |= entries
        interest.heartbeat = min(interest.heartbeat, heartbeat)
        if changed:
            self._restart(name)
        self._ensure_streams()

    async def ready(self, name: str, timeout: float) -> bool:
        """Wait until every other member's stream of ``name`` is established; False on timeout."""
        if self._members is None:
            return True
        events = [
            self._established.setdefault((m.uuid, name), asyncio.Event())
            for m in self._members.members
            if m.uuid != self._me
        ]
        try:
            async with asyncio.timeout(timeout):
                for event in events:
                    await event.wait()
        except TimeoutError:
            return False
        return True

    def remove(self, name: str, receiver: Receiver) -> None:
        """Stop sending ``name``'s events to ``receiver``."""
        interest = self._interests.get(name)
        if interest is None:
            return
        with contextlib.suppress(ValueError):
            interest.receivers.remove(receiver)
        if not interest.receivers:
            del self._interests[name]
            self._restart(name)

    def on_members(self, members: MemberList) -> None:
        """The member list changed: subscribe to newcomers, forget the departed."""
        self._members = members
        for owner, name in list(self._streams):
            if owner not in members:
                self._streams.pop((owner, name)).cancel()
        for key in [key for key in self._established if key[0] not in members]:
            del self._established[key]
        self._ensure_streams()

    def _restart(self, name: str) -> None:
        for key in [key for key in self._streams if key[1] == name]:
            self._streams.pop(key).cancel()
            self._established.pop(key, None)

    def _ensure_streams(self) -> None:
        if self._members is None:
            return
        for name in self._interests:
            for member in self._members.members:
                key = (member.uuid, name)
                if member.uuid != self._me and key not in self._streams:
                    self._streams[key] = self._spawn(self._run(member.uuid, name))

    # ------------------------------------------------------------------ streams
    async def _run(self, owner: str, name: str) -> None:
        state = _StreamState()
        refused = ""  # the owner's last refusal, logged once
        try:
            while name in self._interests:
                source = self._source(owner)
                interest = self._interests.get(name)
                if source is None or interest is None:
                    return
                try:
                    stream = source.subscribe(name, interest.values, interest.entries, interest.heartbeat)
                    async for batch in stream:
                        self._deliver(owner, name, state, batch)
                except RemoteError as exc:
                    # The owner refused the subscription (over its caps) or dropped it (this
                    # member fell behind): worth an operator's eye, once per reason.
                    if str(exc) != refused:
                        refused = str(exc)
                        log.warning("event stream from %s for %r ended: %s", owner[:8], name, exc)
                except PeerGridError as exc:
                    log.debug("event stream from %s for %r ended: %s", owner[:8], name, exc)
                self._broken(owner, name, state)
                state = _StreamState()
                self._established.pop((owner, name), None)
                await asyncio.sleep(self._retry)
        finally:
            # However the stream ends, what it vouched for is no longer vouched for.
            self._broken(owner, name, state)
            if self._streams.get((owner, name)) is asyncio.current_task():
                del self._streams[(owner, name)]

    def _deliver(self, owner: str, name: str, state: _StreamState, batch: EventBatch) -> None:
        interest = self._interests.get(name)
        if interest is None:
            return
        now = time.monotonic()
        state.heard = True
        if batch.heartbeat:
            gapped = [
                p for p, seq in zip(batch.owned, batch.owned_seqs, strict=True) if state.seqs.get(p, 0) != seq
            ]
            for p, seq in zip(batch.owned, batch.owned_seqs, strict=True):
                state.seqs[p] = seq
            state.owned = set(batch.owned)
            if gapped:
                self._gap(owner, name, gapped)
            self._established.setdefault((owner, name), asyncio.Event()).set()
            for receiver in list(interest.receivers):
                receiver.on_alive(owner, now)
        else:
            gapped = []
            for p, seq in zip(batch.partitions, batch.seqs, strict=True):
                if seq != state.seqs.get(p, 0) + 1:
                    gapped.append(p)
                state.seqs[p] = seq
            if gapped:
                self._gap(owner, name, dict.fromkeys(gapped))
            for receiver in list(interest.receivers):
                receiver.on_events(owner, batch)

    def _broken(self, owner: str, name: str, state: _StreamState) -> None:
        """A stream ended: events of any partition the owner had may be lost with it. Its
        last heartbeat is not enough: a partition it gained since (by this member's table)
        may hold entries fetched from it, and the next stream starts counting afresh. (So even
        a stream whose heartbeats listed no partition, one that ended before the owner's first
        migration landed, leaves a gap: receivers served entries on its word meanwhile.)"""
        if state.heard or state.owned or state.seqs:
            self._gap(owner, name, sorted(state.owned | set(state.seqs) | set(self._owned_by(owner))))

    def _gap(self, owner: str, name: str, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        interest = self._interests.get(name)
        if not partitions or interest is None:
            return
        self.gaps += len(partitions)
        for receiver in list(interest.receivers):
            receiver.on_gap(owner, partitions)

    async def stop(self) -> None:
        """Cancel every stream."""
        tasks = list(self._streams.values())
        self._streams.clear()
        self._interests.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
