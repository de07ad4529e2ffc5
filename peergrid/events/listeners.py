"""Entry listeners: user callbacks for changes to a map's entries.

Events reach a member's ``ListenerHub`` for the map from every owner (its own
owned partitions directly, the others' over event streams) and are handed to
callbacks in arrival order, which is per-key order: a key's events all come
from its owner, in the order it applied them. Sync callbacks run one at a time
on the member's dispatcher thread (never on the member's loop, so a slow
callback delays other callbacks, not the grid); callbacks registered through
``AsyncMap`` run on the registering event loop, coroutines included. A
callback that raises is logged and the others go on.

When events may have been missed (an owner died, a stream broke, a sequence
gap), the gap is logged and ``on_gap(partitions)`` is called, if given, rather
than skipped in silence.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from peergrid.events.model import KIND_NAMES, EntryEvent, EventBatch, EventKind
from peergrid.serialization import decode_key

log = logging.getLogger("peergrid.events")

Callback = Callable[..., Any]


@dataclass
class Listener:
    """One registration."""

    id: str
    callbacks: dict[int, Callback]
    key: bytes | None
    include_value: bool
    local: bool
    on_gap: Callback | None
    loop: asyncio.AbstractEventLoop | None  # None: run on the dispatcher thread


class Dispatcher:
    """Runs sync callbacks, in order, on one thread per member."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callback, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._name = name

    def submit(self, fn: Callback, *args: Any) -> None:
        """Queue ``fn(*args)``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            _call(fn, args)

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)


def _call(fn: Callback, args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("entry listener %r failed", getattr(fn, "__name__", fn))


def _call_on_loop(fn: Callback, args: tuple[Any, ...]) -> None:
    try:
        outcome = fn(*args)
        if inspect.isawaitable(outcome):
            asyncio.ensure_future(outcome).add_done_callback(_report)
    except Exception:
        log.exception("entry listener %r failed", getattr(fn, "__name__", fn))


def _report(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("entry listener failed", exc_info=future.exception())


class ListenerHub:
    """The listeners of one map on one member; an event receiver."""

    def __init__(self, name: str, me: str, loads: Callable[[bytes], Any], dispatcher: Dispatcher) -> None:
        self.name = name
        self._me = me
        self._loads = loads
        self._dispatcher = dispatcher
        self.listeners: dict[str, Listener] = {}

    def add(
        self,
        callbacks: dict[int, Callback],
        key: bytes | None,
        include_value: bool,
        local: bool,
        on_gap: Callback | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> Listener:
        """Register a listener."""
        listener = Listener(uuid.uuid4().hex, callbacks, key, include_value, local, on_gap, loop)
        self.listeners[listener.id] = listener
        return listener

    @property
    def wants_values(self) -> bool:
        """True when some listener asked for values."""
        return any(listener.include_value for listener in self.listeners.values())

    @property
    def wants_remote(self) -> bool:
        """True when some listener hears about every member's entries."""
        return any(not listener.local for listener in self.listeners.values())

    # ------------------------------------------------------------------ receiver
    def on_alive(self, owner: str, now: float) -> None:
        """Liveness does not concern listeners."""

    def on_local(self, batch: EventBatch) -> None:
        """Events of partitions this member owns."""
        self.on_events(self._me, batch)

    def on_events(self, owner: str, batch: EventBatch) -> None:
        """Hand each event to the listeners that want it."""
        local = owner == self._me
        listeners = [lst for lst in self.listeners.values() if local or not lst.local]
        if not listeners:
            return
        values = batch.values or []
        olds = batch.old_values or []
        for i, (kind, partition, key) in enumerate(
            zip(batch.kinds, batch.partitions, batch.keys, strict=True)
        ):
            if kind == EventKind.CLEARED:
                continue  # listeners get one REMOVED event per entry instead
            events: dict[bool, EntryEvent | None] = {}  # by include_value, decoded once each
            for listener in listeners:
                callback = listener.callbacks.get(kind)
                if callback is None or (listener.key is not None and listener.key != key):
                    continue
                with_values = listener.include_value
                if with_values not in events:
                    try:
                        events[with_values] = self._event(kind, partition, key, values, olds, i, with_values)
                    except Exception as exc:  # noqa: BLE001 - the owner's other events must still flow
                        log.warning("map %r: an event of key %r cannot be decoded: %s", self.name, key, exc)
                        events[with_values] = None
                event = events[with_values]
                if event is not None:
                    self._deliver(listener, callback, event)

    def _event(
        self,
        kind: int,
        partition: int,
        key: bytes,
        values: list[bytes],
        olds: list[bytes],
        i: int,
        with_values: bool,
    ) -> EntryEvent:
        value = old = None
        if with_values:
            if i < len(values) and values[i]:
                value = self._loads(values[i])
            if i < len(olds) and olds[i]:
                old = self._loads(olds[i])
        return EntryEvent(KIND_NAMES[kind], self.name, decode_key(key), value, old, partition)

    def _deliver(self, listener: Listener, callback: Callback, *args: Any) -> None:
        if listener.loop is None:
            self._dispatcher.submit(callback, *args)
        else:
            try:
                listener.loop.call_soon_threadsafe(_call_on_loop, callback, args)
            except RuntimeError:  # that loop is closed: its listeners are gone
                self.listeners.pop(listener.id, None)

    def on_gap(self, owner: str, partitions: Iterable[int]) -> None:
        """Events may have been missed: say so."""
        partitions = sorted(partitions)
        listeners = [lst for lst in self.listeners.values() if not lst.local]
        if not listeners:
            return
        log.warning(
            "map %r: events of %d partitions (%s) from member %s may have been missed",
            self.name,
            len(partitions),
            partitions[:10],
            owner[:8],
        )
        for listener in listeners:
            if listener.on_gap is not None:
                self._deliver(listener, listener.on_gap, partitions)
