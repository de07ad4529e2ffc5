"""Read-through, write-through and write-behind, on the owner.

A map configured with a ``store`` (``peergrid.stores.MapStore``) keeps it in
step with memory, from the partition's owner:

- **Read-through**: a get that misses in memory loads the key from the store.
  Loads are single-flight: misses of one key from any member wait for one load,
  and the misses gathered during one loop iteration go out as one ``load_all``.
  A loaded entry is kept (and replicated to backups) like a write that is not
  stored again.
- **Write-through**: a write is stored first, then applied and acknowledged;
  a failing store fails the write (``StoreError``) and memory is unchanged.
  Writes to one key go to the store one at a time, in order.
- **Write-behind**: a write is applied and acknowledged at once, and queued in
  an internal map of the same partition (``__peergrid.wb.<map>``), which goes
  to the backups with the write and moves with the partition: a dead owner's
  pending writes are flushed by its successor. A flusher stores entries once
  they are ``delay`` old, ``batch_size`` at a time; a later write to a queued
  key replaces its entry (coalescing). A failing store is retried with backoff;
  each failure is logged and counted, and the entries stay queued.

Store calls block, so they run on a thread pool, never on the member's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from peergrid.config import MapConfig
from peergrid.errors import PeerGridError, StoreError
from peergrid.protocol import Code, Effect, EffectKind, Op, Result, Status
from peergrid.serialization import Serializer, decode_key
from peergrid.stats import MapCounters
from peergrid.storage import Partition
from peergrid.storage.registry import MapRegistry

if TYPE_CHECKING:
    from peergrid.owner.writes import OwnerWrites
    from peergrid.replication import PartitionManager

log = logging.getLogger("peergrid.stores")

QUEUE_PREFIX = "__peergrid.wb."
_STORE, _DELETE = "s", "d"
_NEEDS_OLD = frozenset(
    {
        Code.PUT,
        Code.PUT_IF_ABSENT,
        Code.REPLACE,
        Code.REPLACE_IF_SAME,
        Code.REMOVE,
        Code.REMOVE_IF_SAME,
        Code.EXPIRE,  # (a TTL is set on the entry loaded; the store is not written)
        Code.PERSIST,
    }
)
Outcome = Result | asyncio.Future[Result]


def queue_name(name: str) -> str:
    """The internal map holding ``name``'s pending write-behind entries."""
    return QUEUE_PREFIX + name


class StoreOps:
    """A member's side of its maps' stores. Loop thread only, but for the store calls."""

    def __init__(
        self,
        registry: MapRegistry,
        manager: PartitionManager,
        owner: OwnerWrites,
        serializer: Serializer,
        counters: Callable[[str], MapCounters],
        threads: int,
    ) -> None:
        self._registry = registry
        self._manager = manager
        self._owner = owner
        self._serializer = serializer
        self._counters = counters
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="peergrid-store")
        self._loading: dict[tuple[str, bytes], asyncio.Future[bytes | None]] = {}
        self._batch: dict[str, list[bytes]] = {}  # loads asked for during this loop iteration
        self._chains: dict[tuple[str, bytes], asyncio.Future[None]] = {}  # write-through, per key
        self._flush_locks: dict[str, asyncio.Lock] = {}
        self._backoff: dict[str, tuple[float, float]] = {}  # map -> (next attempt, current pause)

    def backed(self, name: str) -> MapConfig | None:
        """The map's config when it has a store."""
        config = self._registry.config(name)
        return config if config.store is not None else None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ------------------------------------------------------------------ read-through
    def load(self, name: str, key: bytes) -> asyncio.Future[bytes | None]:
        """The key's stored value, encoded (None: not in the store); one load per key at a time."""
        loading = self._loading.get((name, key))
        if loading is not None:
            return loading
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._loading[(name, key)] = future
        batch = self._batch.get(name)
        if batch is None:
            batch = self._batch[name] = []
            loop.call_soon(lambda: asyncio.ensure_future(self._load_batch(name)))
        batch.append(key)
        return future

    async def _load_batch(self, name: str) -> None:
        keys = self._batch.pop(name, [])
        config = self.backed(name)
        found: dict[bytes, bytes] = {}
        error: BaseException | None = None
        if config is None:  # the map has no store now: a miss (a future left unresolved would hang its read)
            for key in keys:
                future = self._loading.pop((name, key), None)
                if future is not None and not future.done():
                    future.set_result(None)
            return
        try:
            values = await self._call(config.store.load_all, [decode_key(k) for k in keys])
            by_key = {k: decode_key(k) for k in keys}
            found = {k: self._serializer.dumps(values[user]) for k, user in by_key.items() if user in values}
            self._counters(name).store_loads += len(keys)
        except Exception as exc:  # noqa: BLE001 - a store is user code: any failure is reported, never raised here
            error = exc
            self._failed(name, "load", exc)
        for key in keys:
            future = self._loading.pop((name, key), None)
            if future is None or future.done():
                continue
            if error is not None:
                future.set_exception(_store_error(name, "load", error))
            else:
                future.set_result(found.get(key))

    def read(self, part: Partition, op: Op, execute: Callable[[], Result]) -> Outcome:
        """A get or contains_key that missed in memory: load, keep, answer."""
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def loaded(future: asyncio.Future[bytes | None]) -> None:
            # Whatever fails here is answered: raised in a done callback, it would leave the read
            # (and the frame that carries it) waiting for ever.
            try:
                value = future.result()
                if value is not None and not self._keep(part, op.map, op.key, value):
                    result = _alone(part)
                else:
                    result = execute()
            except PeerGridError as exc:
                result = _failure(exc)
            except (Exception, asyncio.CancelledError):
                log.exception("a read through map %s's store failed on this member", op.map)
                result = Result(Status.ERROR, message="internal error on the serving member")
            done.set_result(result)

        self.load(op.map, op.key).add_done_callback(loaded)
        return done

    def _keep(self, part: Partition, name: str, key: bytes, value: bytes) -> bool:
        """Put a loaded value in memory, unless a write got there first; False when this member
        lost its quorum or its lease while the store answered: keeping the value is a write (a
        version, a backup write), which it may not make alone (the caller asks again)."""
        if self._manager.readable[part.id] is not part:
            return True  # the partition moved meanwhile: its new owner loads on its own
        store = part.maps.get(name)
        if store is not None and store.peek(key) is not None:
            return True
        if not self._manager.may_change():
            return False
        config = self._registry.config(name)
        expire_at = time.time() + config.ttl if config.ttl else 0.0
        self._owner.keep(part, name, key, value, expire_at, config)
        return True

    # ------------------------------------------------------------------ writes
    def write(self, part: Partition, op: Op, config: MapConfig, apply: Callable[[], Outcome]) -> Outcome:
        """A write on a store-backed map: through the store first, or queued behind."""
        if config.write_behind is not None and op.code not in _NEEDS_OLD:
            return apply()
        return asyncio.ensure_future(self._write(part, op, config, apply))

    async def _write(
        self, part: Partition, op: Op, config: MapConfig, apply: Callable[[], Outcome]
    ) -> Result:
        async with self._in_key_order(op):
            if op.code in _NEEDS_OLD:
                failure = await self._ensure_loaded(part, op)
                if failure is not None:
                    return failure
            if config.write_behind is None:
                failure = await self._store_through(part, op, config)
                if failure is not None:
                    return failure
            refused = self._refused_after_store(part)
            if refused is not None:
                return refused
            outcome = apply()
            return outcome if isinstance(outcome, Result) else await outcome

    def _refused_after_store(self, part: Partition) -> Result | None:
        """Why a write admitted before its store call may no longer be applied to ``part``, or
        None. The caller asks again either way (a repeated store write is harmless: store calls
        are idempotent): at the partition's new owner if it moved, or where a write is admitted
        if this member lost its quorum or lease meanwhile."""
        if self._manager.readable[part.id] is not part:
            return Result(Status.RETRY, message=f"partition {part.id} moved during the store call")
        if not self._manager.may_change():
            return _alone(part)
        return None

    @contextlib.asynccontextmanager
    async def _in_key_order(self, op: Op) -> AsyncIterator[None]:
        """Writes of one key, one at a time, in the order they arrived."""
        chain = (op.map, op.key)
        previous = self._chains.get(chain)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chains[chain] = mine
        try:
            if previous is not None:
                await asyncio.shield(previous)
            yield
        finally:
            mine.set_result(None)
            if self._chains.get(chain) is mine:
                del self._chains[chain]

    def compute(
        self,
        part: Partition,
        op: Op,
        config: MapConfig,
        decide: Callable[[], Op | Result],
        apply: Callable[[Op], Outcome],
    ) -> Outcome:
        """A read-modify-write of one key (an entry processor) on a store-backed map.

        ``decide`` runs after the key's earlier writes, on its value loaded from
        the store if memory misses it, and returns the write to make (or the
        answer, when nothing is written); that write goes through the store (or
        its write-behind queue) like any other before ``apply`` applies it.
        """
        return asyncio.ensure_future(self._compute(part, op, config, decide, apply))

    async def _compute(
        self,
        part: Partition,
        op: Op,
        config: MapConfig,
        decide: Callable[[], Op | Result],
        apply: Callable[[Op], Outcome],
    ) -> Result:
        async with self._in_key_order(op):
            failure = await self._ensure_loaded(part, op)
            if failure is not None:
                return failure
            if self._manager.readable[part.id] is not part:
                return Result(Status.RETRY, message=f"partition {part.id} moved while its entry was loaded")
            write = decide()
            if isinstance(write, Result):
                return write
            if config.write_behind is None:
                failure = await self._store_through(part, write, config)
                if failure is not None:
                    return failure
            refused = self._refused_after_store(part)
            if refused is not None:
                return refused
            outcome = apply(write)
            return outcome if isinstance(outcome, Result) else await outcome

    async def _ensure_loaded(self, part: Partition, op: Op) -> Result | None:
        store = part.maps.get(op.map)
        if store is not None and store.peek(op.key) is not None:
            return None
        try:
            value = await self.load(op.map, op.key)
        except PeerGridError as exc:
            return _failure(exc)
        if value is not None and not self._keep(part, op.map, op.key, value):
            return _alone(part)
        return None

    async def _store_through(self, part: Partition, op: Op, config: MapConfig) -> Result | None:
        store = part.maps.get(op.map)
        current = store.peek(op.key) if store is not None else None
        try:
            if op.code == Code.CLEAR:
                keys = [decode_key(k) for k in (store.values if store is not None else ())]
                if keys:
                    await self._call(config.store.delete_all, keys)
            elif op.code in (Code.DELETE, Code.REMOVE) or (
                op.code == Code.REMOVE_IF_SAME and current is not None and self._equal(current, op.expect)
            ):
                await self._call(config.store.delete, decode_key(op.key))
            elif _stores(op, current, self._equal):
                value = self._serializer.loads(op.value)
                await self._call(config.store.store, decode_key(op.key), value)
            else:
                return None
        except Exception as exc:  # noqa: BLE001 - a store is user code: any failure fails this write
            self._failed(op.map, "store", exc)
            return _failure(_store_error(op.map, "store", exc))
        self._counters(op.map).store_writes += 1
        return None

    def _equal(self, a: bytes, b: bytes) -> bool:
        if a == b:
            return True
        try:
            return bool(self._serializer.loads(a) == self._serializer.loads(b))
        except PeerGridError:
            return False

    # ------------------------------------------------------------------ write-behind
    def enqueue(
        self, part: Partition, name: str, effects: Sequence[Effect], cleared: Sequence[bytes]
    ) -> list[Effect]:
        """Queue a write-behind map's changes in its partition; return the queue's effects."""
        now = time.time()
        queued = []
        qname = queue_name(name)
        for effect in effects:
            if effect.kind == EffectKind.PUT:
                record = msgpack.packb([_STORE, now, effect.value], use_bin_type=True)
                queued.append(Effect(EffectKind.PUT, qname, effect.key, record))
            elif effect.kind == EffectKind.DELETE:
                record = msgpack.packb([_DELETE, now, b""], use_bin_type=True)
                queued.append(Effect(EffectKind.PUT, qname, effect.key, record))
            elif effect.kind == EffectKind.CLEAR:
                record = msgpack.packb([_DELETE, now, b""], use_bin_type=True)
                queued.extend(Effect(EffectKind.PUT, qname, key, record) for key in cleared)
        part.apply(queued)
        return queued

    async def flush_due(self) -> None:
        """Store the queued writes that are due, on every owned partition (periodic). Not
        without quorum or lease: this member may be on the minority side of a split, whose
        queues the majority's owners hold too (they are replicated) and store; a store from
        here could put an older value over one written there since."""
        if not self._manager.may_change():
            return
        for name, config in list(self._registry.write_behind()):
            lock = self._flush_lock(name)
            if lock.locked() or time.monotonic() < self._backoff.get(name, (0.0, 0.0))[0]:
                continue
            assert config.write_behind is not None
            due_before = time.time() - config.write_behind.delay
            async with lock:
                await self._flush(name, config, due_before, None)

    async def flush(self, part: Partition, name: str) -> Result:
        """Store every queued write of ``name`` in ``part`` now (``m.flush()``)."""
        config = self.backed(name)
        if config is None or config.write_behind is None:
            return Result()
        async with self._flush_lock(name):  # one flush of a map at a time keeps each key's writes in order
            failure = await self._flush(name, config, float("inf"), part)
        return failure or Result()

    def _flush_lock(self, name: str) -> asyncio.Lock:
        lock = self._flush_locks.get(name)
        if lock is None:
            lock = self._flush_locks[name] = asyncio.Lock()
        return lock

    async def _flush(
        self, name: str, config: MapConfig, due_before: float, only: Partition | None
    ) -> Result | None:
        assert config.write_behind is not None
        while True:
            batch = self._due(name, due_before, config.write_behind.batch_size, only)
            if not batch:
                return None
            failure = await self._store_batch(name, config, batch)
            if failure is not None:
                return failure

    def _due(
        self, name: str, due_before: float, limit: int, only: Partition | None
    ) -> list[tuple[Partition, bytes, bytes, str, bytes]]:
        """Up to ``limit`` queued entries older than ``due_before``: (part, key, record, kind, value)."""
        qname = queue_name(name)
        readable = self._manager.readable
        parts = [only] if only is not None else [p for p in readable if p is not None]
        due = []
        for part in parts:
            queue = part.maps.get(qname) if part is not None else None
            if part is None or queue is None:
                continue
            for key, record in list(queue.values.items()):
                kind, enqueued_at, value = msgpack.unpackb(record, raw=False)
                if enqueued_at <= due_before:
                    due.append((part, key, record, kind, value))
                    if len(due) >= limit:
                        return due
        return due

    async def _store_batch(
        self, name: str, config: MapConfig, batch: list[tuple[Partition, bytes, bytes, str, bytes]]
    ) -> Result | None:
        writes = {
            decode_key(key): self._serializer.loads(value)
            for _, key, _, kind, value in batch
            if kind == _STORE
        }
        deletes = [decode_key(key) for _, key, _, kind, _ in batch if kind == _DELETE]
        try:
            if writes:
                await self._call(config.store.store_all, writes)
            if deletes:
                await self._call(config.store.delete_all, deletes)
        except Exception as exc:  # noqa: BLE001 - a store is user code: any failure is retried
            self._failed(name, "store", exc)
            self._back_off(name, config)
            return _failure(_store_error(name, "store", exc))
        self._backoff.pop(name, None)
        self._counters(name).store_writes += len(batch)
        if not self._manager.may_change():
            # Dequeuing is a write this member may not make alone: the entries stay queued (and
            # this flush stops here, or it would take the same batch again).
            return _alone()
        qname = queue_name(name)
        for part, key, record, _, _ in batch:
            queue = part.maps.get(qname)
            # A write since this batch was taken replaced the record: it stays queued.
            if (
                queue is not None
                and queue.values.get(key) == record
                and self._manager.readable[part.id] is part
            ):
                self._owner.delete(part, qname, key, 0)
        return None

    def _back_off(self, name: str, config: MapConfig) -> None:
        assert config.write_behind is not None
        pause = self._backoff.get(name, (0.0, config.write_behind.retry_initial / 2))[1] * 2
        pause = min(max(pause, config.write_behind.retry_initial), config.write_behind.retry_max)
        self._backoff[name] = (time.monotonic() + pause, pause)

    def pending(self, name: str) -> int:
        """Writes of ``name`` queued on partitions this member owns."""
        qname = queue_name(name)
        return sum(
            len(part.maps[qname])
            for part in self._manager.readable
            if part is not None and qname in part.maps
        )

    # ------------------------------------------------------------------ failures
    def _failed(self, name: str, what: str, exc: BaseException) -> None:
        self._counters(name).store_failures += 1
        log.error(
            "map %r: %s through its store failed: %s",
            name,
            what,
            exc,
            exc_info=not isinstance(exc, PeerGridError),
        )

    def stop(self) -> None:
        """Stop the store threads (calls in flight finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _stores(op: Op, current: bytes | None, equal: Callable[[bytes, bytes], bool]) -> bool:
    """Whether a write op stores its value, given the key's current value."""
    if op.code in (Code.PUT, Code.SET):
        return True
    if op.code == Code.PUT_IF_ABSENT:
        return current is None
    if op.code == Code.REPLACE:
        return current is not None
    if op.code == Code.REPLACE_IF_SAME:
        return current is not None and equal(current, op.expect)
    return False


def _alone(part: Partition | None = None) -> Result:
    """The answer to an op whose write this member may no longer make: it lost its quorum or
    its owner lease while the store answered (see ``PartitionManager.may_change``). The caller
    asks again, and hears why from ``Executor.admit`` (a store write made meanwhile is repeated:
    store calls are idempotent)."""
    store = "the store" if part is None else f"partition {part.id}'s store"
    message = f"this member lost its quorum or its owner lease while {store} answered"
    return Result(Status.RETRY, message=message)


def _store_error(name: str, what: str, exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"map {name!r}: {what} through its store failed: {type(exc).__name__}: {exc}")


def _failure(exc: BaseException) -> Result:
    retry = " (retryable)" if getattr(exc, "retryable", False) else ""
    return Result(Status.STORE, message=f"{exc}{retry}")
