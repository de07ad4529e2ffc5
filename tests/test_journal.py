"""The journal of changes made while the cluster may be split, and the merge decisions on it."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peergrid.invocation.invoker import Call
from peergrid.member.merging import Merged, changes, merge_back, merge_spares
from peergrid.protocol import Code, Effect, EffectKind, Op, Result, Status
from peergrid.storage import Partition, journal


def test_a_hybrid_clock_never_repeats_nor_goes_back() -> None:
    clock = journal.HybridClock()
    stamps = [clock.now() for _ in range(1000)]
    assert stamps == sorted(set(stamps))
    far = stamps[-1] + (10_000 << 16)  # a member whose wall clock is 10 s ahead
    clock.observe(far)
    assert clock.now() > far


def test_a_window_opened_for_a_loss_seen_elsewhere_lasts_the_rest_of_the_horizon() -> None:
    # A member that joins after its cluster lost a member journals for what is left of the
    # horizon since that loss (``MemberList.lost_at``), never longer than the horizon.
    window = journal.Window(horizon=100.0)
    assert not window.active()
    assert not window.open(since=time.time() - 150), "past the horizon: nothing to journal"
    assert not window.active()
    assert window.open(since=time.time() - 40)
    assert 59 < window.until - time.monotonic() <= 60
    assert not window.open(since=time.time() - 90), "already journaling: not opened again"
    assert 59 < window.until - time.monotonic() <= 60, "an older loss shortens nothing"
    window.open(since=time.time() + 1e6)  # a clock far ahead: no longer than the horizon
    assert 99 < window.until - time.monotonic() <= 100
    assert not window.open()
    assert 99 < window.until - time.monotonic() <= 100


@given(stamp=st.integers(1, 2**62), deleted=st.booleans())
def test_a_journal_record_keeps_its_stamp_and_kind(stamp: int, deleted: bool) -> None:
    rec = journal.record(stamp, deleted)
    assert journal.stamp_in(rec) == stamp
    assert journal.is_delete(rec) is deleted


def test_latest_update_keeps_the_later_change_and_fills_only_absent_keys() -> None:
    mine = journal.record(100, False)
    assert journal.applies("latest_update", 101, mine, present=True)
    assert not journal.applies("latest_update", 100, mine, present=True)
    assert not journal.applies("latest_update", 99, mine, present=False)  # a later delete here
    assert journal.applies("latest_update", 5, None, present=True)  # unchanged here since the split
    # An entry the merging side did not journal (instances that formed apart): only where absent.
    assert journal.applies("latest_update", 0, None, present=False)
    assert not journal.applies("latest_update", 0, None, present=True)
    assert not journal.applies("latest_update", 0, journal.record(7, True), present=False)


def test_the_other_policies() -> None:
    mine = journal.record(100, False)
    assert journal.applies("pass_through", 1, mine, present=True)
    assert not journal.applies("discard", 999, None, present=False)
    assert journal.applies("put_if_absent", 1, mine, present=False)
    assert not journal.applies("put_if_absent", 999, None, present=True)


def _partition() -> Partition:
    part = Partition(3, 7)
    part.apply(
        [
            Effect(EffectKind.PUT, "m", b"kept", b"1"),  # written before the split: not journaled
            Effect(EffectKind.PUT, "m", b"new", b"2", 0.0, 10),
            Effect(EffectKind.PUT, "m", b"gone", b"3", 0.0, 11),
            Effect(EffectKind.DELETE, "m", b"gone", b"", 0.0, 12),
            Effect(EffectKind.PUT, "other", b"x", b"4", 0.0, 13),
        ]
    )
    return part


def test_a_partition_journals_stamped_changes_and_carries_them_in_a_copy() -> None:
    part = _partition()
    assert part.journaled("m", b"kept") is None
    assert part.journaled("m", b"new") == journal.record(10, False)
    assert part.journaled("m", b"gone") == journal.record(12, True)
    copy = Partition(3, 7)
    copy.apply(part.snapshot())  # a migration or a backup rebuild
    assert copy.journal == part.journal
    assert copy.maps["m"].values == part.maps["m"].values


def test_a_keys_stamps_only_grow() -> None:
    part = _partition()
    put = Effect(EffectKind.PUT, "m", b"gone", b"5")
    assert part.stamp_after(put, 30) == 30  # later than the key's record (12): as given
    assert part.stamp_after(put, 12) == 13  # not later: one past it
    assert part.stamp_after(Effect(EffectKind.PUT, "m", b"never-written", b"6"), 1) == 1
    part.apply([Effect(EffectKind.CLEAR, "m", b"", b"", 0.0, 20)])
    assert part.stamp_after(put, 15) == 21  # a clear of the map is every key's record
    assert part.stamp_after(Effect(EffectKind.CLEAR, "m", b""), 20) == 21


def test_a_clear_is_journaled_for_the_whole_map() -> None:
    part = _partition()
    part.apply([Effect(EffectKind.CLEAR, "m", b"", b"", 0.0, 20)])
    assert part.journaled("m", b"new") == journal.record(20, True)
    assert part.journaled("m", b"never-written") == journal.record(20, True)
    assert part.journaled("other", b"x") == journal.record(13, False)


def test_the_journal_is_bounded_in_time_and_size() -> None:
    part = _partition()
    part.prune_journal(oldest=12, most=100)  # older than the horizon: gone
    assert set(part.journal or {}) == {("m", b"gone"), ("other", b"x")}
    part.prune_journal(oldest=0, most=1)  # the oldest first
    assert set(part.journal or {}) == {("other", b"x")}
    part.prune_journal(oldest=14, most=100)
    assert part.journal is None


def test_a_merge_sends_the_journal_and_between_instances_everything() -> None:
    part = _partition()
    split = sorted((c.kind, c.map, c.key, c.stamp) for c in changes(part, same_origin=True))
    assert split == [
        (EffectKind.PUT, "m", b"new", 10),
        (EffectKind.PUT, "other", b"x", 13),
        (EffectKind.DELETE, "m", b"gone", 12),
    ]
    apart = {(c.map, c.key, c.stamp) for c in changes(part, same_origin=False)}
    assert ("m", b"kept", 0) in apart  # unstamped: written only where absent
    assert len(apart) == 4


def _increment(part: Partition, key: bytes, who: str, total: int, stamp: int) -> None:
    part.apply(
        [
            Effect(EffectKind.PUT, "m", key, b"?"),
            Effect(EffectKind.DELTA, "m", key, journal.encode_delta(who, total), 0.0, stamp),
        ]
    )


def test_a_counter_only_incremented_journals_what_each_member_added() -> None:
    part = Partition(0)
    _increment(part, b"hits", "a", 2, 10)
    _increment(part, b"hits", "a", 5, 11)
    _increment(part, b"hits", "b", 1, 12)
    _increment(part, b"hits", "a", 4, 9)  # an older count, resent: counts only grow
    assert part.contributions("m", b"hits") == {"a": 5, "b": 1}
    assert part.journaled("m", b"hits") == journal.record(9, False)
    copy = Partition(0)
    copy.apply(part.snapshot())  # a migration keeps the counts
    assert copy.contributions("m", b"hits") == {"a": 5, "b": 1}
    merged = sorted(
        journal.decode_delta(c.value) for c in changes(part, same_origin=True) if c.key == b"hits"
    )
    assert merged == [("a", 5), ("b", 1)]
    # Once set (or deleted, or its map cleared), it merges as any other change.
    part.apply([Effect(EffectKind.PUT, "m", b"hits", b"7", 0.0, 13)])
    assert part.contributions("m", b"hits") is None
    _increment(part, b"hits", "a", 6, 14)
    assert part.contributions("m", b"hits") is None


def test_an_unstamped_increment_journals_nothing() -> None:
    part = Partition(0)
    part.apply([Effect(EffectKind.DELTA, "m", b"k", journal.encode_delta("a", 1))])
    assert part.journal is None
    assert part.deltas is None


class _Survivor:
    """The surviving instance as a merging member's invoker sees it: SIZE answers LOST for the
    partitions it lost (``unsure`` first answer QUORUM, as a survivor not yet quorate would),
    MERGE ops are recorded and applied."""

    def __init__(self, lost: set[int], unsure: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.lost, self.unsure = lost, set(unsure)
        self.merged: list[Op] = []

    def start_many(self, calls: list[Call]) -> None:
        for call in calls:
            op = call.op
            if op.code == Code.SIZE and op.partition in self.unsure:
                self.unsure.discard(op.partition)
                call.finish(Result(Status.QUORUM))
            elif op.code == Code.SIZE:
                call.finish(Result(Status.LOST) if op.partition in self.lost else Result(count=1))
            else:
                self.merged.append(op)
                call.finish(Result(count=len(op.effects)))


def test_a_merging_member_brings_the_copies_it_held_but_did_not_serve() -> None:
    # A backup (or an owner not yet serving) on the side that merges may hold the last copy: one
    # the survivor lost comes back whole; of one it serves, the journaled changes go (Jepsen's
    # split-kill-larger: partitions whose copies were held only as backups were lost for good).
    lost, served, plain, empty = _partition(), _partition(), Partition(5, 2), Partition(6, 0)
    lost.id, served.id = 1, 2
    plain.apply([Effect(EffectKind.PUT, "m", b"old", b"1")])  # nothing journaled
    restored: list[int] = []

    async def restore(copy: Partition) -> str:
        restored.append(copy.id)
        return "restored"

    async def body() -> tuple[Merged, _Survivor]:
        survivor = _Survivor(lost={1}, unsure={5})
        outcome = await merge_spares(
            [lost, served, plain, empty],
            restore,
            survivor,
            (100, 1 << 20),
            5.0,
            0.05,  # type: ignore[arg-type]
        )
        return outcome, survivor

    outcome, survivor = asyncio.run(body())
    assert restored == [1]
    assert outcome.restored == 1
    assert outcome.failed == 0
    assert [op.partition for op in survivor.merged] == [2, 2]  # its two maps' journaled changes
    assert outcome.changes == 3


@pytest.mark.parametrize("same_origin", [True, False])
def test_a_merging_member_asks_before_it_sends_a_served_copy_whole(same_origin: bool) -> None:
    # Between the two sides of a split, a served copy travelled whole only to ask whether the
    # survivor lost its partition: a merge moved the merging side's whole data. Now the survivor
    # is asked first (SIZE answers LOST there): only a lost partition's copy goes whole (an
    # empty one is offered whole without asking: there is nothing to send); a served one sends
    # its journaled changes. Between instances that formed apart, each copy is offered whole,
    # and every entry of those the survivor serves goes, as before.
    lost, served, empty = _partition(), _partition(), Partition(6, 0)
    lost.id, served.id = 1, 2
    offered: list[int] = []

    async def restore(copy: Partition) -> str:
        offered.append(copy.id)
        return "restored" if copy.id in (1, 6) else "served"

    async def body() -> tuple[Merged, _Survivor]:
        survivor = _Survivor(lost={1, 6})
        outcome = await merge_back(
            [lost, served, empty],
            same_origin,
            restore,
            survivor,  # type: ignore[arg-type]
            (100, 1 << 20),
            5.0,
            0.05,
        )
        return outcome, survivor

    outcome, survivor = asyncio.run(body())
    assert outcome.restored == 2
    assert outcome.failed == 0
    assert [op.partition for op in survivor.merged] == [2, 2]  # the served copy's two maps
    if same_origin:
        assert sorted(offered) == [1, 6]
        assert outcome.changes == 3  # its journaled changes only
    else:
        assert offered == [1, 2, 6]
        assert outcome.changes == 4  # and the entry written before (no history in common)
