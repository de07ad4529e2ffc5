"""Distributed locks on map keys: the caller's side.

``m.lock(key)``, ``m.try_lock(key, timeout=..., lease=...)``, ``m.unlock(key)``
and ``m.is_locked(key)`` on ``DistributedMap`` and ``AsyncMap``; the owner's
side is ``peergrid.owner.compute``, the semantics are in ``docs/locks.md``.

A lock is held by a *holder*: a thread (sync API) or an asyncio task (async
API) of one member. The same holder may take it again (reentrant: each lock
needs its unlock); any other holder, on this member or another, waits. A
waiting caller asks the owner again with a growing, jittered pause
(``Timing.lock_retry_initial`` to ``lock_retry_max``) until its timeout.

Every grant returns a *fencing token*, greater than every earlier grant's
token of that lock. A holder can lose a lock without being told (its lease
ended, its member was dropped from the cluster): a resource the lock guards
should remember the highest token it has seen and refuse requests with a
lower one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, NamedTuple

from peergrid.config import Timing
from peergrid.errors import ArgumentError, IndeterminateWriteError, LockError, PeerGridError
from peergrid.maps.flows import Flow
from peergrid.protocol import Code, LockRequest, Op, Result
from peergrid.serialization import Key

_random = random.Random()  # noqa: S311 - jitter and sampling; our own: the application's global state is not ours

log = logging.getLogger("peergrid.maps.locks")

# ---------------------------------------------------------------------- holders
# A holder id is a serial drawn once per thread or task, never reused in this process
# (thread idents and id(task) are reused once their owner is gone).
_serials = itertools.count(1)
_thread_ids = threading.local()
_task_ids: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
_task_ids_lock = threading.Lock()


def thread_holder() -> int:
    """The calling thread's holder id."""
    try:
        return int(_thread_ids.serial)
    except AttributeError:
        _thread_ids.serial = next(_serials)
        return int(_thread_ids.serial)


def task_holder() -> int:
    """The current asyncio task's holder id (the thread's, outside a task)."""
    task = asyncio.current_task()
    if task is None:
        return thread_holder()
    with _task_ids_lock:
        serial = _task_ids.get(task)
        if serial is None:
            serial = _task_ids[task] = next(_serials)
        return serial


def _nonce() -> int:
    return int.from_bytes(os.urandom(8), "big") >> 1


def check_lease(lease: object) -> float:
    """Lease seconds as the wire carries them (0 = none), or ``ArgumentError``."""
    if lease is None:
        return 0.0
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease < math.inf:
        raise ArgumentError(f"lease must be a positive number of seconds (or None for none), got {lease!r}")
    return float(lease)


def check_timeout(timeout: object, *, allow_none: bool) -> float | None:
    """A wait in seconds (None = forever, where allowed), or ``ArgumentError``."""
    if timeout is None and allow_none:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout < math.inf:
        raise ArgumentError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


# ---------------------------------------------------------------------- what holders were granted
class _Grant(NamedTuple):
    token: int
    holds: int
    lease_ends: float | None  # time.monotonic() when the lease ends; None: no lease


_PRUNE_FLOOR = 1024  # grants remembered before ended leases are forgotten (amortised)


class _Book:
    """The grants this process's holders hold, to say why an unlock failed (the owner only
    knows the lock's current state, not that a lease ended under a holder)."""

    def __init__(self) -> None:
        self._grants: dict[tuple[str, str, bytes, int], _Grant] = {}
        self._lock = threading.Lock()
        self._prune_at = _PRUNE_FLOOR

    def granted(self, where: tuple[str, str, bytes, int], token: int, lease: float) -> None:
        now = time.monotonic()
        ends = now + lease if lease else None
        with self._lock:
            grant = self._grants.get(where)
            if grant is not None and grant.token == token:
                self._grants[where] = _Grant(token, grant.holds + 1, ends or grant.lease_ends)
            else:
                self._grants[where] = _Grant(token, 1, ends)
            if len(self._grants) >= self._prune_at:
                # Leases let holders never unlock: forget grants whose lease ended (their unlock,
                # if it ever comes, then says "not held" rather than "lease ended").
                self._grants = {
                    w: g for w, g in self._grants.items() if g.lease_ends is None or g.lease_ends > now
                }
                self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._grants))

    def token(self, where: tuple[str, str, bytes, int]) -> int:
        """The fencing token of the grant held at ``where`` (0: none known)."""
        with self._lock:
            grant = self._grants.get(where)
        return grant.token if grant is not None else 0

    def released(self, where: tuple[str, str, bytes, int]) -> None:
        with self._lock:
            grant = self._grants.pop(where, None)
            if grant is not None and grant.holds > 1:
                self._grants[where] = grant._replace(holds=grant.holds - 1)

    def lost(self, where: tuple[str, str, bytes, int], current: int) -> str:
        """Why the holder at ``where`` could not unlock, the lock now at token ``current`` (0: free)."""
        with self._lock:
            grant = self._grants.pop(where, None)
        now_state = f"it is now held by another holder (token {current})" if current else "it is now free"
        if grant is None:
            return f"not held by this {'holder' if current else 'or any holder'}" + (
                f": held by another holder (token {current})" if current else ""
            )
        if grant.lease_ends is not None and time.monotonic() >= grant.lease_ends:
            return f"the lease of the grant with token {grant.token} ended before the unlock; {now_state}"
        return (
            f"the grant with token {grant.token} was released without an unlock (its holder's member "
            f"was dropped from the cluster, or the partition lost every copy); {now_state}"
        )


_BOOK = _Book()


# ---------------------------------------------------------------------- the protocol
class LockCalls:
    """Lock operations of one map on one member, as flows (see ``peergrid.maps.flows``)."""

    def __init__(
        self,
        name: str,
        member: str,
        timing: Timing,
        timeout: float,
        key: Callable[[Key], tuple[bytes, int]],
    ) -> None:
        self._name = name
        self._member = member
        self._timing = timing
        self._timeout = timeout  # how long an attempt of unknown outcome is sent again
        self._key = key  # the encoded key and its partition

    def _where(self, encoded: bytes, holder: int) -> tuple[str, str, bytes, int]:
        return (self._member, self._name, encoded, holder)

    def _op(self, code: int, key: Key, holder: int, lease: float = 0.0) -> Op:
        encoded, partition = self._key(key)
        # An unlock names the grant it releases: delivered late, it then releases nothing else.
        token = _BOOK.token(self._where(encoded, holder)) if code == Code.UNLOCK else 0
        request = LockRequest(self._member, holder, _nonce(), token)
        return Op(code, partition, self._name, encoded, request.encode(), ttl=lease)

    def _pauses(self) -> Generator[float, None, None]:
        pause = self._timing.lock_retry_initial
        while True:
            yield pause * _random.uniform(0.5, 1.0)
            pause = min(pause * 2, self._timing.lock_retry_max)

    def acquire(self, key: Key, holder: int, timeout: float | None, lease: object) -> Flow[Op, int | None]:
        """Take the lock for ``holder``, waiting up to ``timeout`` (None: forever); the token or None."""
        seconds = check_lease(lease)
        op = self._op(Code.LOCK, key, holder, seconds)
        deadline = None if timeout is None else time.monotonic() + timeout
        pauses = self._pauses()
        while True:
            result, _ = yield from self._settled(op)
            if result.found:
                _BOOK.granted(self._where(op.key, holder), result.count, seconds)
                return result.count
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            pause = next(pauses)
            yield float(pause if deadline is None else min(pause, deadline - now))

    def release(self, key: Key, holder: int) -> Flow[Op, None]:
        """Release one hold of ``holder``; ``LockError`` when it holds none."""
        op = self._op(Code.UNLOCK, key, holder)
        where = self._where(op.key, holder)
        result, unsure = yield from self._settled(op)
        if result.found or unsure:
            # After an attempt of unknown outcome, "not held" means that attempt released it.
            _BOOK.released(where)
            return
        raise LockError(f"{self._name}.unlock({key!r}): {_BOOK.lost(where, result.count)}")

    def _settled(self, op: Op) -> Generator[Op | float, Any, tuple[Result, bool]]:
        """Run ``op`` until its outcome is known; also whether an earlier attempt's was not.

        An attempt of unknown outcome (the owner failed mid-call) is sent again:
        its nonce makes a repeat change nothing. For up to the map's operation
        timeout, then ``IndeterminateWriteError``.
        """
        unsure_since: float | None = None
        while True:
            try:
                result: Result = yield op
            except IndeterminateWriteError:
                now = time.monotonic()
                unsure_since = unsure_since if unsure_since is not None else now
                if now - unsure_since > self._timeout:
                    raise
                yield float(self._timing.lock_retry_initial)
                continue
            except PeerGridError as exc:
                if unsure_since is None:
                    raise
                # The resend was refused (quorum lost, the partition lost...): that says nothing
                # of the earlier attempt, which may have been applied.
                raise IndeterminateWriteError(
                    f"{self._name}: a lock call's outcome is unknown (an attempt was sent, then "
                    f"its resend failed: {exc}); the lock may or may not have changed"
                ) from exc
            return result, unsure_since is not None

    def state(self, key: Key) -> Op:
        """The op asking whether ``key``'s lock is held."""
        encoded, partition = self._key(key)
        return Op(Code.LOCK_STATE, partition, self._name, encoded)


# ---------------------------------------------------------------------- handles
class LockHandle:
    """A lock held by the calling thread, as ``DistributedMap.lock`` returns it.

    ``with m.lock(key) as token:`` releases it when the block ends; or call
    ``unlock()`` (from the same thread). ``token`` is the grant's fencing token.
    """

    __slots__ = ("_key", "_name", "_released", "_unlock", "token")

    def __init__(self, name: str, key: Key, token: int, unlock: Callable[[Key], None]) -> None:
        self._name = name
        self._key = key
        self.token = token
        self._unlock = unlock
        self._released = False

    def unlock(self) -> None:
        """Release this hold (once); ``LockError`` when it was lost meanwhile."""
        if not self._released:
            self._released = True
            self._unlock(self._key)

    def __enter__(self) -> int:
        return self.token

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        _exit(self.unlock, kind)

    def __repr__(self) -> str:
        return f"LockHandle({self._name}[{self._key!r}], token={self.token})"


class AsyncLockHandle:
    """``async with m.lock(key) as token:`` (acquires on entry, releases on exit), or
    ``token = await m.lock(key)`` (then ``await m.unlock(key)`` from the same task)."""

    __slots__ = ("_acquire_in_task", "_key", "_name", "_unlock", "token")

    def __init__(
        self,
        name: str,
        key: Key,
        acquire: Callable[[], Awaitable[int]],
        unlock: Callable[[Key], Awaitable[None]],
    ) -> None:
        self._name = name
        self._key = key
        self._acquire_in_task = acquire  # called in the task that awaits: the holder
        self._unlock = unlock
        self.token: int | None = None

    async def _acquire(self) -> int:
        self.token = await self._acquire_in_task()
        return self.token

    def __await__(self) -> Generator[Any, None, int]:
        return self._acquire().__await__()

    async def __aenter__(self) -> int:
        return await self._acquire()

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._unlock(self._key)
        except LockError:
            if kind is None:
                raise
            log.warning("lock %s[%r] was lost before the block ended", self._name, self._key, exc_info=True)


def _exit(unlock: Any, kind: type[BaseException] | None) -> None:
    try:
        unlock()
    except LockError:
        if kind is None:
            raise
        # The block's own exception is the one to see; the lost lock is logged.
        log.warning("a lock was lost before the block ended", exc_info=True)
