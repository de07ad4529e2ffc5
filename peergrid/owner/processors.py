"""Entry processors: functions registered by name, run atomically on a key's owner.

No code travels over the network. A caller sends the processor's *name* and
its arguments (serialized with the grid's serializer); the key's owner looks
the name up in its own registry and calls ``fn(entry, *args)`` on its loop
thread, between two other operations on that partition: nothing else reads or
writes the partition meanwhile, so read-modify-write is atomic. What ``fn``
does to the entry goes through the owner's ordinary write path (a version
bump, the backups, events for listeners and near caches, eviction), and what
it returns goes back to the caller::

    @peergrid.entry_processor("add_tag")
    def add_tag(entry, tag):
        tags = entry.value or []
        if tag in tags:
            return False          # nothing assigned: nothing written
        entry.value = [*tags, tag]
        return True

    users.execute_on_key("user:1", "add_tag", "admin")

A processor must be registered under the same name, doing the same thing, on
every member (a module-level ``@entry_processor`` does that for every member
that imports the module; ``grid.register_processor`` registers on one member).
It runs on the member's event loop: it must be quick and must not block (no
I/O, no locks, no calls to the grid).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from peergrid.errors import ArgumentError
from peergrid.protocol import MAX_NAME
from peergrid.serialization import Key

Processor = Callable[..., Any]
F = TypeVar("F", bound=Processor)

RESERVED_PREFIX = "peergrid."  # built-in processors; users' names may not start with it
INCREMENT = "peergrid.increment"
RELEASE_CLAIM = "peergrid.maps.cached.release"  # @cached: drop a computing marker if it is still ours


class Entry:
    """The entry a processor works on, on the key's owner.

    ``key`` is the key as the caller gave it (decoded: ``str``, ``bytes`` or
    ``int``). ``value`` is its live value, decoded (None when absent).
    Assigning ``entry.value`` writes the new value when the processor returns
    (assigning None removes the entry, as ``delete()`` does); ``entry.delete()``
    removes it; a processor that does neither writes nothing. Changing a
    decoded value in place (``entry.value["n"] += 1``) writes nothing: assign
    it back. ``ttl`` (seconds) applies to a value written by this call; left
    at None, an entry that already expires keeps its expiry, and a new one
    gets the map's default TTL (as configured on the owner), if any.
    """

    __slots__ = ("_decoded", "_loads", "_raw", "_value", "_written", "key", "ttl")

    def __init__(self, key: Key, raw: bytes | None, loads: Callable[[bytes], Any]) -> None:
        self.key = key
        self.ttl: float | None = None
        self._raw = raw
        self._loads = loads
        self._decoded = False
        self._value: Any = None
        self._written = False

    @property
    def exists(self) -> bool:
        """True while the entry has a value (before this call, or assigned by it)."""
        return self.value is not None

    @property
    def value(self) -> Any:
        """The entry's value (decoded on first use), or None when it has none."""
        if not self._decoded:
            self._value = self._loads(self._raw) if self._raw is not None else None
            self._decoded = True
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value
        self._decoded = True
        self._written = True

    def delete(self) -> None:
        """Remove the entry when the processor returns."""
        self.value = None

    @property
    def written(self) -> bool:
        """True when the processor assigned a value or deleted the entry."""
        return self._written

    def __repr__(self) -> str:
        return f"Entry(key={self.key!r}, value={self.value!r})"


def check_name(name: object, *, registering: bool = False) -> str:
    """A valid processor name, or ``ArgumentError``."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ArgumentError(
            f"entry processor names are non-empty str of at most {MAX_NAME} characters, got {name!r}"
        )
    if registering and name.startswith(RESERVED_PREFIX):
        raise ArgumentError(f"entry processor names starting with {RESERVED_PREFIX!r} are peergrid's own")
    return name


def _same(a: Processor, b: Processor) -> bool:
    # A module imported twice (a reload, a test runner) registers a new function object
    # of the same name: the same processor.
    return a is b or (
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


def _add(table: dict[str, Processor], name: str, fn: Processor, where: str) -> None:
    if not callable(fn):
        raise ArgumentError(f"entry processor {name!r} must be callable, got {fn!r}")
    current = table.get(name)
    if current is not None and not _same(current, fn):
        raise ArgumentError(
            f"another entry processor is already registered as {name!r} {where} ({current!r})"
        )
    table[name] = fn


_process_wide: dict[str, Processor] = {}
_process_wide_lock = threading.Lock()


def entry_processor(name: str) -> Callable[[F], F]:
    """Register the decorated function as entry processor ``name`` for every member in this process.

    ``fn(entry, *args)`` receives an ``Entry`` and the caller's arguments; see
    ``peergrid.owner.processors``. Import the module on every member. Raises
    ``ArgumentError`` when another function already has the name.
    """
    check_name(name, registering=True)

    def register(fn: F) -> F:
        with _process_wide_lock:
            _add(_process_wide, name, fn, "in this process")
        return fn

    return register


class ProcessorRegistry:
    """The processors one member runs: its own (``grid.register_processor``), then the process's."""

    def __init__(self) -> None:
        self._own: dict[str, Processor] = {}
        self._lock = threading.Lock()

    def register(self, name: str, fn: Processor) -> None:
        """Register ``fn`` as ``name`` on this member only."""
        check_name(name, registering=True)
        with self._lock:
            _add(self._own, name, fn, "on this member")

    def get(self, name: str) -> Processor | None:
        """The processor registered as ``name``, or None."""
        fn = self._own.get(name)
        return fn if fn is not None else _process_wide.get(name)


# ---------------------------------------------------------------------- built-ins
def _increment(entry: Entry, delta: int, ttl: float | None) -> int:
    """Add ``delta`` to an int counter (absent = 0); a new counter gets ``ttl``."""
    current = entry.value
    if current is None:
        current = 0
        entry.ttl = ttl
    elif isinstance(current, bool) or not isinstance(current, int):
        raise TypeError(f"the value of {entry.key!r} is a {type(current).__name__}, not an int counter")
    entry.value = current + delta
    return current + delta


def _release_claim(entry: Entry, marker: list[Any]) -> bool:
    """Remove the entry if its value is ``marker``; True if it did."""
    if entry.value != marker:
        return False
    entry.delete()
    return True


_process_wide[INCREMENT] = _increment
_process_wide[RELEASE_CLAIM] = _release_claim
