"""Locks: mutual exclusion across members, reentrancy, leases, fencing tokens, failures.

The state machine at the end acquires and releases locks from several threads
of several members while members die, and checks against a model that at most
one holder holds a lock at a time and that every grant's token is higher than
every earlier grant's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import msgpack
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import peergrid
from peergrid import Timing
from peergrid.maps.locks import _Book, check_lease, check_timeout, task_holder, thread_holder
from peergrid.owner.compute import LOCKS_PREFIX, LockRecord, LockRequest
from peergrid.partition import partition_of
from peergrid.protocol import Code, Member, MemberList, Op, Status
from peergrid.serialization import encode_key
from peergrid.testing import TestCluster, cluster
from tests.conftest import wait_for

log = logging.getLogger("tests.locks")


def owner(grids: TestCluster, key: object) -> peergrid.Grid:
    uuid = grids.live()[0].owner_of(key).uuid
    return next(g for g in grids.live() if g.uuid == uuid)


def key_owned_by(grids: TestCluster, grid: peergrid.Grid, prefix: str = "k") -> str:
    return next(k for k in (f"{prefix}{i}" for i in range(1000)) if owner(grids, k) is grid)


def in_thread(fn: Any) -> Any:
    """Run ``fn`` on another thread (another lock holder) and return its result."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=30)


# ---------------------------------------------------------------------- unit
def test_records_and_requests_round_trip_and_refuse_garbage() -> None:
    record = LockRecord("member", 7, 2, 41, 99)
    assert LockRecord.decode(record.encode()) == record
    request = LockRequest("member", 7, 12345, 41)
    assert LockRequest.decode(request.encode()) == request
    # A member from before unlocks were fenced sends three fields: an unfenced request.
    assert LockRequest.decode(msgpack.packb(["member", 7, 12345])) == LockRequest("member", 7, 12345, 0)
    assert record.held_by(request)
    assert not record.held_by(LockRequest("member", 8, 1))
    for garbage in (b"", b"\xc1", b"\x93\x01\x02\x03", LockRecord("m", 1, 1, 1, 1).encode()):
        with pytest.raises(ValueError):
            LockRequest.decode(garbage)


def test_holders_are_per_thread_and_per_task_and_never_reused() -> None:
    mine = thread_holder()
    assert thread_holder() == mine
    others = {in_thread(thread_holder) for _ in range(5)}
    assert mine not in others
    assert len(others) == 5  # a new thread gets a new id even where the old ident is reused

    async def tasks() -> set[int]:
        async def one() -> int:
            first = task_holder()
            await asyncio.sleep(0)
            assert task_holder() == first
            return first

        return set(await asyncio.gather(*(one() for _ in range(5))))

    ids = asyncio.run(tasks())
    assert len(ids) == 5
    assert not ids & (others | {mine})


def test_argument_checks() -> None:
    assert check_lease(None) == 0.0
    assert check_lease(2) == 2.0
    for bad in (0, -1, float("inf"), True, "1"):
        with pytest.raises(peergrid.ArgumentError):
            check_lease(bad)
    assert check_timeout(None, allow_none=True) is None
    with pytest.raises(peergrid.ArgumentError):
        check_timeout(None, allow_none=False)
    with pytest.raises(peergrid.ArgumentError):
        check_timeout(-1, allow_none=True)


def test_the_book_of_grants_forgets_ended_leases_of_holders_that_never_unlock() -> None:
    book = _Book()
    for i in range(5000):
        book.granted(("member", "m", b"k%d" % i, 1), i + 1, 1e-9)
    book.granted(("member", "m", b"held", 1), 1, 0.0)
    assert len(book._grants) < 2048
    assert "not held" in book.lost(("member", "m", b"k0", 1), 0)
    assert "released without an unlock" in book.lost(("member", "m", b"held", 1), 0)


# ---------------------------------------------------------------------- on a cluster
def test_mutual_exclusion_across_members_and_tokens_increase(api, grids3: TestCluster, name: str) -> None:
    inside = 0
    tokens: list[int] = []
    guard = threading.Lock()

    def work(grid: peergrid.Grid) -> None:
        nonlocal inside
        m = api.map(grid, name)
        for _ in range(8):
            with m.lock("counter") as token:
                with guard:
                    inside += 1
                    assert inside == 1, "two holders at once"
                    tokens.append(token)
                value = m.get("n") or 0
                m.set("n", value + 1)  # a read-modify-write only the lock makes safe
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work, args=(g,)) for g in grids3 for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert api.map(grids3[0], name).get("n") == 72
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 72
    assert not api.map(grids3[1], name).is_locked("counter")


def test_reentrant_holds_share_a_token_and_each_needs_its_unlock(api, grids3: TestCluster, name: str) -> None:
    a, b, _ = grids3
    m = api.map(a, name)
    with m.lock("k") as first:
        assert m.try_lock("k") == first
        assert m.is_locked("k")
        assert api.map(b, name).is_locked("k")
        m.unlock("k")
        assert api.map(b, name).try_lock("k") is None  # still held once
    assert not m.is_locked("k")
    with pytest.raises(peergrid.LockError, match="not held by this or any holder"):
        m.unlock("k")
    second = api.map(b, name).try_lock("k")
    assert second is not None
    assert second > first
    api.map(b, name).unlock("k")


def test_waiting_ends_at_the_timeout(api, grids3: TestCluster, name: str) -> None:
    a, b, _ = grids3
    token = api.map(b, name).try_lock("k")
    assert token is not None
    m = api.map(a, name)
    started = time.monotonic()
    assert m.try_lock("k") is None
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert m.try_lock("k", timeout=0.4) is None
    assert 0.4 <= time.monotonic() - started < 2.0
    with pytest.raises(peergrid.LockError, match=r"not acquired within 0\.2s"):
        m.lock("k", timeout=0.2)
    # Another thread of the same member is another holder.
    assert in_thread(lambda: api.map(b, name).try_lock("k")) is None
    with pytest.raises(peergrid.LockError, match=rf"held by another holder \(token {token}\)"):
        in_thread(lambda: api.map(b, name).unlock("k"))
    api.map(b, name).unlock("k")
    assert m.try_lock("k", timeout=2) is not None
    m.unlock("k")


def test_a_waiter_gets_the_lock_soon_after_it_is_released(api, grids3: TestCluster, name: str) -> None:
    a, b, _ = grids3
    holder_has_it = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with api.map(b, name).lock("k"):
            holder_has_it.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holder_has_it.wait(10)
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with api.map(a, name).lock("k", timeout=5):
        waited = time.monotonic() - started
    t.join()
    assert 0.25 <= waited < 1.5


def test_a_lease_ends_the_hold_and_the_late_holder_learns_it(
    api, grids3: TestCluster, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, _ = grids3
    first = api.map(a, name).try_lock("k", lease=0.3)
    assert first is not None
    started = time.monotonic()
    second = api.map(b, name).try_lock("k", timeout=5)
    assert second is not None
    assert second > first
    assert 0.25 <= time.monotonic() - started < 2
    with pytest.raises(
        peergrid.LockError, match=rf"lease .* token {first} ended .* held by another .*{second}"
    ):
        api.map(a, name).unlock("k")
    api.map(b, name).unlock("k")
    # A with-block that outlives its lease raises at its end...
    with pytest.raises(peergrid.LockError, match="lease"), api.map(a, name).lock("k", lease=0.1):
        time.sleep(0.3)
    # ...unless the block raised: that exception is the one seen, the lost lock is logged.
    with pytest.raises(ZeroDivisionError):
        _fail_after_the_lease(api.map(a, name))
    assert "lost before the block ended" in caplog.text


def _fail_after_the_lease(m: peergrid.DistributedMap) -> None:
    with m.lock("k", lease=0.1):
        time.sleep(0.3)
        _ = 1 / 0


def test_a_reentrant_lock_may_extend_its_lease(api, grids3: TestCluster, name: str) -> None:
    m = api.map(grids3[0], name)
    token = m.try_lock("k", lease=0.3)
    assert m.try_lock("k", lease=5) == token
    time.sleep(0.5)
    assert api.map(grids3[1], name).try_lock("k") is None
    m.unlock("k")
    m.unlock("k")


def test_the_lock_state_is_replicated_with_its_partition(api, grids3: TestCluster, name: str) -> None:
    a = grids3[0]
    api.map(a, name).lock("k")
    p = partition_of(encode_key("k"), 271)
    by_uuid = {g.uuid: g for g in grids3}
    assert grids3.wait_until_safe()
    for uuid in a._node.manager.table.replicas[p]:
        store = by_uuid[uuid]._node.manager.parts[p].maps[LOCKS_PREFIX + name]
        assert LockRecord.decode(store.get(encode_key("k"))).holds == 1
    assert api.map(a, name).size() == 0  # the map itself holds no entry for its locks
    api.map(a, name).unlock("k")


def test_internal_map_names_are_refused(grids3: TestCluster) -> None:
    with pytest.raises(peergrid.ArgumentError, match="peergrid's own"):
        grids3[0].get_map(LOCKS_PREFIX + "x")


def test_the_lock_survives_its_owner_dying_and_moving(api) -> None:
    with cluster(3, backup_count=1) as grids:
        holder, other, doomed = grids
        key = key_owned_by(grids, doomed)
        token = api.map(holder, "m").try_lock(key)
        assert token is not None
        grids.kill(doomed)
        assert api.map(other, "m").try_lock(key) is None
        assert api.map(other, "m").is_locked(key)
        assert grids.wait_until_safe()
        joined = grids.add()
        assert grids.wait_until_safe()
        assert api.map(joined, "m").try_lock(key) is None
        api.map(holder, "m").unlock(key)
        later = api.map(joined, "m").try_lock(key)
        assert later is not None
        assert later > token


def test_a_dead_holders_locks_are_released_and_dropped(api) -> None:
    with cluster(3, backup_count=1) as grids:
        a, b, doomed = grids
        keys = [key_owned_by(grids, g) for g in (a, b)]
        tokens = [api.map(doomed, "m").try_lock(k) for k in keys]
        assert None not in tokens
        grids.kill(doomed)
        for key, token in zip(keys, tokens, strict=True):
            started = time.monotonic()
            later = api.map(a, "m").try_lock(key, timeout=10)
            assert later is not None
            assert later > token
            assert time.monotonic() - started < 5
            api.map(a, "m").unlock(key)

        def records() -> int:
            return sum(
                len(part.maps.get(LOCKS_PREFIX + "m", ()))
                for g in (a, b)
                for part in g._node.manager.readable
                if part is not None
            )

        wait_for(lambda: records() == 0, 5, message="the dead holder's records dropped by their owners")


def test_an_owner_without_quorum_keeps_departed_holders_records() -> None:
    # Dropping a departed holder's lock is a write (a version, a backup write): without quorum an
    # owner takes none, as for an expiry (test_failover). A version bumped alone could name
    # another write beyond the split, and a merge carries the version over. The lock counts as
    # free meanwhile (its holder is not in the list) and its lease ends it.
    with cluster(3, min_cluster_size=2) as grids:
        survivor, a, b = grids
        keys = [key_owned_by(grids, survivor, prefix) for prefix in ("a", "b")]
        assert None not in [g.get_map("m").try_lock(k, lease=60) for g, k in zip((a, b), keys, strict=True)]
        grids.kill(a)
        grids.kill(b)
        wait_for(lambda: len(survivor.members()) == 1, 10, message="the dead members removed")
        node = survivor._node

        def held() -> dict[int, tuple[int, int]]:
            """(version, lock records) of each partition served here that holds lock records."""
            return {
                p: (part.version, len(part.maps[LOCKS_PREFIX + "m"]))
                for p, part in enumerate(node.manager.readable)
                if part is not None and len(part.maps.get(LOCKS_PREFIX + "m", ()))
            }

        async def drop() -> int:
            return node.compute.drop_departed()

        before = held()
        assert sum(n for _, n in before.values()) == 2
        assert node.run(drop(), timeout=10) == 0
        assert held() == before


def test_a_member_leaving_releases_its_locks(api) -> None:
    with cluster(3) as grids:
        a, _, leaver = grids
        api.map(leaver, "m").lock("k")
        leaver.shutdown()
        assert api.map(a, "m").try_lock("k", timeout=5) is not None
        api.map(a, "m").unlock("k")


def test_async_locks_exclude_other_tasks() -> None:
    async def main() -> None:
        options = {"cluster": f"locks-{time.time_ns()}", "timing": Timing.fast()}
        async with (
            peergrid.AsyncGrid(**options) as a,
            peergrid.AsyncGrid(**options, members=[a.address]) as b,
        ):
            assert await b.wait_until_safe(10)
            inside = 0
            tokens: list[int] = []

            async def work(grid: peergrid.AsyncGrid) -> None:
                nonlocal inside
                m = grid.get_map("m")
                for _ in range(5):
                    async with m.lock("k") as token:
                        inside += 1
                        assert inside == 1
                        tokens.append(token)
                        await asyncio.sleep(0.001)
                        inside -= 1

            await asyncio.gather(*(work(g) for g in (a, b, a, b)))
            assert tokens == sorted(tokens)
            assert len(set(tokens)) == 20
            m = a.get_map("m")
            token = await m.lock("k")
            assert await m.try_lock("k") == token  # the same task: reentrant
            assert await asyncio.create_task(m.try_lock("k")) is None  # another task
            with pytest.raises(peergrid.LockError, match="held by another holder"):
                await asyncio.create_task(m.unlock("k"))
            assert await b.get_map("m").is_locked("k")
            await m.unlock("k")
            await m.unlock("k")
            assert not await m.is_locked("k")
            assert await b.get_map("m").try_lock("x") is not None
            with pytest.raises(peergrid.LockError, match=r"not acquired within 0\.1s"):
                await asyncio.create_task(_lock_briefly(b.get_map("m"), "x", 0.1))
            await b.get_map("m").unlock("x")

    asyncio.run(main())


async def _lock_briefly(m: peergrid.AsyncMap, key: str, timeout: float) -> None:
    async with m.lock(key, timeout=timeout):
        pass


# ---------------------------------------------------------------------- the model
KEYS = ["a", "b", "{t}c"]


class Client:
    """One lock holder: a thread of one member."""

    def __init__(self, grid: peergrid.Grid, number: int) -> None:
        self.grid = grid
        self.name = f"{grid.address}#{number}"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"client-{self.name}")

    @property
    def alive(self) -> bool:
        return not self.grid.closed

    def run(self, fn: Any) -> Any:
        return self._pool.submit(lambda: fn(self.grid.get_map("locks"))).result(timeout=60)

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def __repr__(self) -> str:
        return self.name


class LockModel(RuleBasedStateMachine):
    """Threads of several members take and release locks while members die and join."""

    SIZE = 3
    GRID_OPTIONS: ClassVar[dict[str, Any]] = {"backup_count": 1}
    MAX_MEMBERS = 4
    CLIENTS_PER_MEMBER = 2

    def __init__(self) -> None:
        super().__init__()
        log.warning("--- new example")
        self._cm = cluster(self.SIZE, **self.GRID_OPTIONS)
        self.grids: TestCluster = self._cm.__enter__()
        self.clients = [Client(g, i) for g in self.grids for i in range(self.CLIENTS_PER_MEMBER)]
        self.holder: dict[str, Client | None] = dict.fromkeys(KEYS)
        self.holds: dict[str, int] = dict.fromkeys(KEYS, 0)
        self.token: dict[str, int] = dict.fromkeys(KEYS, 0)
        self.highest: dict[str, int] = dict.fromkeys(KEYS, 0)
        self.orphaned: set[str] = set()  # held by a dead client until the cluster notices
        self.safe = True  # no kill or join since the cluster was last safe (backups complete)

    def teardown(self) -> None:
        for client in self.clients:
            client.close()
        self._cm.__exit__(None, None, None)

    def live_client(self, index: int) -> Client:
        live = [c for c in self.clients if c.alive]
        return live[index % len(live)]

    @rule(index=st.integers(0, 99), key=st.sampled_from(KEYS))
    def acquire(self, index: int, key: str) -> None:
        client = self.live_client(index)
        token = client.run(lambda m: m.try_lock(key))
        holder = self.holder[key]
        log.warning("%s try_lock %s -> %s (holder %s)", client, key, token, holder)
        if holder is client:
            assert token == self.token[key], "a reentrant lock keeps its token"
            self.holds[key] += 1
            return
        if holder is not None:
            assert token is None, f"{client} got {key} while {holder} holds it"
            return
        if token is None:
            assert key in self.orphaned, f"{key} is free, yet {client} did not get it"
            return
        assert token > self.highest[key], f"token {token} after {self.highest[key]}"
        self.orphaned.discard(key)
        self.holder[key], self.holds[key], self.token[key], self.highest[key] = client, 1, token, token

    @rule(index=st.integers(0, 99), key=st.sampled_from(KEYS))
    def release(self, index: int, key: str) -> None:
        client = self.live_client(index)
        log.warning("%s unlock %s (holder %s)", client, key, self.holder[key])
        if self.holder[key] is client:
            client.run(lambda m: m.unlock(key))
            self.holds[key] -= 1
            if not self.holds[key]:
                self.holder[key] = None
            return
        with pytest.raises(peergrid.LockError):
            client.run(lambda m: m.unlock(key))

    @rule(index=st.integers(0, 99), key=st.sampled_from(KEYS))
    def check_locked(self, index: int, key: str) -> None:
        locked = self.live_client(index).run(lambda m: m.is_locked(key))
        if self.holder[key] is not None:
            assert locked, f"{key} held by {self.holder[key]} but reported free"
        elif key not in self.orphaned:
            assert not locked, f"{key} is free but reported held"

    @precondition(lambda self: self.safe and len(self.grids.live()) >= 2)
    @rule(index=st.integers(0, 99))
    def kill(self, index: int) -> None:
        live = self.grids.live()
        doomed = live[index % len(live)]
        log.warning("kill %s", doomed.address)
        self.grids.kill(doomed)
        self.safe = False  # at most backup_count (1) member dies between safe points
        for key, holder in self.holder.items():
            if holder is not None and holder.grid is doomed:
                self.holder[key], self.holds[key] = None, 0
                self.orphaned.add(key)

    @precondition(lambda self: len(self.grids.live()) < self.MAX_MEMBERS)
    @rule()
    def add_member(self) -> None:
        grid = self.grids.add()
        self.safe = False  # its copies arrive in the background
        log.warning("added %s", grid.address)
        self.clients.extend(Client(grid, i) for i in range(self.CLIENTS_PER_MEMBER))

    @precondition(lambda self: not self.safe)
    @rule()
    def settle(self) -> None:
        log.warning("settle")
        assert self.grids.wait_until_safe(timeout=60), "the cluster did not become safe"
        self.safe = True
        self.orphaned.clear()  # every dead member is out of the list: its locks are free

    @invariant()
    def holders_are_alive(self) -> None:
        for holder in self.holder.values():
            assert holder is None or holder.alive


LockModel.TestCase.settings = settings(max_examples=6, stateful_step_count=30, deadline=None)
TestLockModel = LockModel.TestCase


def test_a_refused_resend_after_an_unknown_outcome_is_indeterminate(api) -> None:
    # The first LOCK attempt's outcome is unknown (its owner failed mid-call); the resend is
    # refused (the member lost quorum). The lock may have been granted: not a definite failure.
    with cluster(1) as grids:
        calls = api.map(grids[0], "locks")._core.locks
        flow = calls.acquire("k", holder=1, timeout=1.0, lease=None)
        assert isinstance(next(flow), Op)
        assert isinstance(flow.throw(peergrid.IndeterminateWriteError("owner died")), float)  # a pause
        assert isinstance(next(flow), Op)  # the resend
        with pytest.raises(peergrid.IndeterminateWriteError, match="outcome is unknown"):
            flow.throw(peergrid.QuorumError("refused"))


def test_a_lock_is_not_free_because_a_list_of_another_instance_had_the_same_version(api) -> None:
    # A member that merged into another instance of the cluster meets list version numbers it had
    # in its own instance: holders counted present must come from the list in force, not from a
    # list remembered by its version (every lock looked free, and was granted again and again).
    with cluster(1) as grids:
        node = grids[0]._node
        m = api.map(grids[0], "locks")
        assert m.try_lock("k", timeout=0) is not None
        real = node.membership.members
        stranger = Member("f" * 32, "127.0.0.1:1")
        node.membership.members = MemberList(real.version, stranger.uuid, (stranger,))
        assert node.compute._present_members() == {stranger.uuid}  # the other instance's list
        node.membership.members = real  # the list in force now: same version, other members
        result: list[int | None] = []
        other = threading.Thread(target=lambda: result.append(m.try_lock("k", timeout=0)))
        other.start()
        other.join()
        assert result == [None], "granted to a second holder"


def test_a_lock_is_not_granted_to_a_member_the_owners_list_lacks(api) -> None:
    # A grant recorded for a member missing from the owner's list is void on arrival (its record
    # counts as free), so the next holder would get the lock while the first still holds it: the
    # owner asks the caller to retry (it was removed, or its admission has not arrived yet).
    with cluster(1) as grids:
        node = grids[0]._node
        m = api.map(grids[0], "locks")
        encoded = encode_key("k")
        op = Op(
            Code.LOCK,
            partition_of(encoded, node.config.partition_count),
            "locks",
            encoded,
            LockRequest("f" * 32, 1, 7).encode(),
        )

        async def lock() -> Any:
            return node.compute.execute(op, 0)

        result = node.run(lock(), timeout=5)
        assert result.status == Status.RETRY
        assert "not in the lock owner's member list" in result.message
        assert m.try_lock("k", timeout=0) is not None, "the refused request left a record behind"


def test_an_unlock_delivered_late_does_not_release_the_holders_next_grant(api) -> None:
    # An unlock whose outcome the caller never learned (sent into a partition) may reach the owner
    # after the same holder took the lock again: it names the grant it released, so it releases
    # nothing else (before, it released the new grant and the next caller got the lock too).
    with cluster(1) as grids:
        node = grids[0]._node
        m = api.map(grids[0], "locks")
        first = m.try_lock("k", timeout=0)
        assert first is not None
        m.unlock("k")
        second = m.try_lock("k", timeout=0)
        assert second is not None
        assert second > first
        encoded = encode_key("k")

        p = partition_of(encoded, node.config.partition_count)
        held = LockRecord.decode(node.manager.parts[p].maps[LOCKS_PREFIX + "locks"].get(encoded))

        def unlock(token: int) -> Any:
            request = LockRequest(held.member, held.holder, 1234567, token)
            op = Op(Code.UNLOCK, p, "locks", encoded, request.encode())

            async def run() -> Any:
                return await asyncio.ensure_future(_awaitable(node.compute.execute(op, 0)))

            return node.run(run(), timeout=5)

        stale = unlock(first)
        assert not stale.found
        assert stale.count == second
        assert in_thread(lambda: m.try_lock("k", timeout=0)) is None, "the stale unlock released the grant"
        assert unlock(second).found  # the unlock naming the grant held releases it
        assert in_thread(lambda: m.try_lock("k", timeout=0)) is not None


async def _awaitable(value: Any) -> Any:
    return await value if isinstance(value, asyncio.Future) else value
