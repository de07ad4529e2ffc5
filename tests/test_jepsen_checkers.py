"""The Jepsen harness's checkers on hand-written and generated histories (no cluster, no root)."""

from __future__ import annotations

import random
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.jepsen import checkers
from tests.jepsen.history import Fault, Operation, pair
from tests.jepsen.linear import check_register
from tests.strategies import register_histories

MS = 1_000_000


class History:
    """Records written in order: ``h.op("p1", "set", "r0", "a", start=1, end=2)``; times in ms."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def op(
        self,
        process: str,
        f: str,
        key: str,
        value: Any = None,
        *,
        start: float,
        end: float | None = None,
        result: Any = None,
        kind: str = "ok",
        final: bool = False,
    ) -> History:
        call = {"process": process, "type": "invoke", "f": f, "key": key, "time": int(start * MS)}
        if f != "get":
            call["value"] = value
        if final:
            call["final"] = True
        self.records.append(call)
        if end is not None:
            done = {"process": process, "type": kind, "f": f, "key": key, "time": int(end * MS)}
            if f == "get":
                done["value"] = value
            else:
                done["result"] = result
            self.records.append(done)
        return self

    def ops(self) -> list[Operation]:
        return pair(self.records)


def linearizable(h: History, **kw: Any) -> checkers.Verdict:
    return checkers.linearizable(h.ops(), **kw)


# ---------------------------------------------------------------------- pairing
def test_an_invocation_without_completion_is_info_and_pending_for_ever() -> None:
    ops = History().op("a/0", "set", "r0", "x", start=1).op("b/0", "get", "r0", "x", start=2, end=3).ops()
    assert [(op.f, op.type, op.complete) for op in ops] == [("set", "info", None), ("get", "ok", 3 * MS)]


# ---------------------------------------------------------------------- linearizability
def test_sequential_register_history_is_linearizable() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("b/0", "get", "r0", "x", start=3, end=4)
        .op("a/0", "put", "r0", "y", start=5, end=6, result="x")
        .op("a/0", "cas", "r0", ["y", "z"], start=7, end=8, result=True)
        .op("a/0", "cas", "r0", ["y", "w"], start=9, end=10, result=False)
        .op("b/0", "get", "r0", "z", start=11, end=12)
        .op("a/0", "delete", "r0", start=13, end=14, result=True)
        .op("a/0", "delete", "r0", start=15, end=16, result=False)
        .op("b/0", "get", "r0", None, start=17, end=18)
    )
    assert linearizable(h).valid


def test_a_stale_read_is_not_linearizable_and_the_window_names_it() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "set", "r0", "y", start=3, end=4)
        .op("b/0", "get", "r0", "x", start=5, end=6)
    )
    verdict = linearizable(h)
    assert not verdict.valid
    assert "not linearizable" in verdict.anomalies[0]
    assert "get(r0, 'x')" in verdict.anomalies[0]


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ("x", "y"):
        h = (
            History()
            .op("a/0", "set", "r0", "x", start=1, end=2)
            .op("a/0", "set", "r0", "y", start=3, end=10)
            .op("b/0", "get", "r0", seen, start=4, end=5)
        )
        assert linearizable(h).valid


def test_reads_must_agree_on_the_order_of_concurrent_writes() -> None:
    # y then x by one reader, x then y by another, both sequential after the writes began.
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=20)
        .op("c/0", "set", "r0", "y", start=1, end=20)
        .op("b/0", "get", "r0", "x", start=2, end=3)
        .op("b/0", "get", "r0", "y", start=4, end=5)
        .op("d/0", "get", "r0", "y", start=6, end=7)
        .op("d/0", "get", "r0", "x", start=8, end=9)
    )
    assert not linearizable(h).valid


def test_an_info_write_may_take_effect_late_or_never() -> None:
    late = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "set", "r0", "y", start=3, end=4, kind="info")
        .op("b/0", "get", "r0", "x", start=10, end=11)
        .op("b/0", "get", "r0", "y", start=12, end=13)
    )
    assert linearizable(late).valid
    never = History().op("a/0", "set", "r0", "y", start=3, end=4, kind="info")
    never.op("b/0", "get", "r0", None, start=12, end=13)
    assert linearizable(never).valid
    # ...but not before it was invoked.
    early = History().op("b/0", "get", "r0", "y", start=1, end=2)
    early.op("a/0", "set", "r0", "y", start=3, end=4, kind="info")
    assert not linearizable(early).valid


def test_failed_writes_and_failed_reads_are_dropped() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2, kind="fail")
        .op("b/0", "get", "r0", "whatever", start=3, end=4, kind="fail")
        .op("b/0", "get", "r0", None, start=5, end=6)
    )
    assert linearizable(h).valid
    seen = History().op("a/0", "set", "r0", "x", start=1, end=2, kind="fail")
    seen.op("b/0", "get", "r0", "x", start=5, end=6)
    assert not linearizable(seen).valid


def test_put_returns_the_previous_value_and_is_checked_as_a_read() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "set", "r0", "y", start=3, end=4)
        .op("a/0", "put", "r0", "z", start=5, end=6, result="x")
    )
    assert not linearizable(h).valid


def test_reads_in_fault_windows_can_be_left_out_while_writes_still_count() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "set", "r0", "y", start=3, end=4)
        .op("b/0", "get", "r0", "x", start=5, end=6)
        .op("a/0", "put", "r0", "z", start=7, end=8, result="x")
        .op("b/0", "get", "r0", "z", start=20, end=21)
    )
    assert not linearizable(h).valid
    assert linearizable(h, exclude_reads_in=[(5 * MS, 8 * MS)]).valid
    # The write in the window must still have happened: a later read of y fails.
    h.op("b/0", "get", "r0", "y", start=22, end=23)
    assert not linearizable(h, exclude_reads_in=[(5 * MS, 8 * MS)]).valid


def test_a_cas_or_delete_that_changed_nothing_in_a_window_is_a_read_left_out() -> None:
    """Jepsen split-2-3 with min_cluster_size=1: a client's set was acknowledged by the side it
    was on; its member then joined the other side, which evaluated its next cas before the
    first side's changes merged in, and answered False. It wrote nothing anywhere, and the
    merge then brought the set's value: a read of the other side's value, in the window."""
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "cas", "r0", ("x", "y"), start=3, end=4, result=False)
        .op("b/0", "get", "r0", "x", start=20, end=21)
    )
    assert not linearizable(h).valid
    assert linearizable(h, exclude_reads_in=[(1 * MS, 10 * MS)]).valid
    deleted = History().op("a/0", "set", "r0", "x", start=1, end=2)
    deleted.op("a/0", "delete", "r0", start=3, end=4, result=False)
    deleted.op("b/0", "get", "r0", "x", start=20, end=21)
    assert not linearizable(deleted).valid
    assert linearizable(deleted, exclude_reads_in=[(1 * MS, 10 * MS)]).valid
    # One that says it changed something still must have: it is not left out.
    swapped = History().op("a/0", "set", "r0", "x", start=1, end=2)
    swapped.op("a/0", "cas", "r0", ("x", "y"), start=3, end=4, result=True)
    swapped.op("b/0", "get", "r0", "x", start=20, end=21)
    assert not linearizable(swapped, exclude_reads_in=[(1 * MS, 10 * MS)]).valid


def test_an_exhausted_budget_is_unknown_never_a_pass() -> None:
    h = History()
    for i in range(12):
        h.op(f"w{i}/0", "set", "r0", f"v{i}", start=1, kind="info")
    h.op("b/0", "get", "r0", "nobody", start=5, end=6)
    verdict = linearizable(h, budget=1000)
    assert not verdict.valid
    assert verdict.unknown
    assert verdict.summary().startswith("unknown")


def test_each_key_is_checked_on_its_own() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "set", "r1", "y", start=3, end=4)
        .op("b/0", "get", "r0", "x", start=5, end=6)
        .op("b/0", "get", "r1", "x", start=7, end=8)
    )
    verdict = linearizable(h)
    assert verdict.checked == 2
    assert len(verdict.anomalies) == 1
    assert verdict.anomalies[0].startswith("r1:")


@settings(max_examples=300)
@given(register_histories())
def test_generated_linearizable_histories_pass(records: list[dict[str, Any]]) -> None:
    verdict = checkers.linearizable(pair(records))
    assert verdict.valid, verdict.anomalies


def _stale_read(ops: list[Operation], choose: st.DataObject) -> list[Operation] | None:
    """A copy of ``ops`` in which one read returns a value overwritten before it began, or None."""
    writes = [
        op
        for op in ops
        if op.type == "ok" and (op.f in ("set", "put", "delete") or (op.f == "cas" and op.result))
    ]
    candidates = []
    for read in (op for op in ops if op.f == "get" and op.type == "ok"):
        for old in writes:
            if old.f == "delete":
                continue
            if any(
                old.end < w.invoke and w.end < read.invoke for w in writes if w is not old
            ) and read.value != (old.value[1] if old.f == "cas" else old.value):
                candidates.append((read, old))
    if not candidates:
        return None
    read, old = choose.draw(st.sampled_from(candidates))
    stale = old.value[1] if old.f == "cas" else old.value
    return [
        Operation(op.index, op.process, op.f, op.key, stale, op.result, op.invoke, op.complete, op.type)
        if op is read
        else op
        for op in ops
    ]


@settings(max_examples=300)
@given(register_histories(), st.data())
def test_generated_histories_with_a_stale_read_fail(
    records: list[dict[str, Any]], data: st.DataObject
) -> None:
    mutated = _stale_read(pair(records), data)
    if mutated is None:
        return
    assert not checkers.linearizable(mutated).valid


def _simulated(rng: random.Random, processes: int, ops_per_process: int) -> list[dict[str, Any]]:
    """A long linearizable history of one key: one writer, ``processes`` readers (as a run has)."""
    records: list[dict[str, Any]] = []
    events: list[tuple[float, str, dict[str, Any], dict[str, Any]]] = []
    serial = 0
    for p in range(processes + 1):
        now = rng.uniform(0, 5)
        for _ in range(ops_per_process):
            start = now + rng.uniform(0.1, 2)
            end = start + rng.uniform(0.1, 3)
            f = rng.choice(["set", "put", "delete", "cas"]) if p == 0 else "get"
            serial += 1
            value: Any = None
            if f in ("set", "put"):
                value = f"v{serial}"
            elif f == "cas":
                value = [f"v{serial - 1}", f"v{serial}"]
            call = {
                "process": f"p{p}",
                "type": "invoke",
                "f": f,
                "key": "r0",
                "time": int(start * MS),
                "value": value,
            }
            done = {"process": f"p{p}", "type": "ok", "f": f, "key": "r0", "time": int(end * MS)}
            events.append((rng.uniform(start, end), f, call, done))
            now = end
    state: Any = None
    for _, f, call, done in sorted(events, key=lambda e: e[0]):
        value = call["value"]
        if f == "get":
            done["value"] = state
        elif f == "set":
            state = value
        elif f == "put":
            done["result"], state = state, value
        elif f == "cas":
            done["result"] = state == value[0]
            state = value[1] if done["result"] else state
        else:
            done["result"], state = state is not None, None
        records.extend((call, done))
    return records


def test_a_few_thousand_operations_of_one_key_check_quickly() -> None:
    records = _simulated(random.Random(7), processes=12, ops_per_process=250)
    ops = pair(records)
    assert len(ops) > 3000
    started = time.monotonic()
    verdict = check_register("r0", ops)
    assert verdict.valid
    assert time.monotonic() - started < 20
    # One stale read among them is found.
    reads = [op for op in ops if op.f == "get" and op.value is not None]
    victim = reads[len(reads) // 2]
    older = [op for op in ops if op.f in ("set", "put") and op.end < victim.invoke - 20 * MS]
    stale = older[-5].value
    mutated = [
        Operation(op.index, op.process, op.f, op.key, stale, op.result, op.invoke, op.complete, op.type)
        if op is victim
        else op
        for op in ops
    ]
    assert check_register("r0", mutated).valid is False


# ---------------------------------------------------------------------- lost writes, resurrection
def test_the_last_acked_write_must_survive() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "put", "r0", "y", start=3, end=4, result="x")
        .op("f/0", "get", "r0", "x", start=10, end=11, final=True)
    )
    verdict = checkers.lost_writes(h.ops())
    assert len(verdict.anomalies) == 1
    assert "lost 1 acked write" in verdict.anomalies[0]


def test_a_later_info_write_may_replace_an_acked_one() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/1", "set", "r0", "y", start=3, end=4, kind="info")
        .op("f/0", "get", "r0", "y", start=10, end=11, final=True)
    )
    assert checkers.lost_writes(h.ops()).valid
    h.op("f/1", "get", "r0", "x", start=10, end=11, final=True)
    assert checkers.lost_writes(h.ops()).valid
    # A value nobody wrote (a failed write) is reported.
    h.op("a/2", "set", "r0", "z", start=5, end=6, kind="fail")
    h.op("f/2", "get", "r0", "z", start=10, end=11, final=True)
    verdict = checkers.lost_writes(h.ops())
    assert len(verdict.anomalies) == 1
    assert "stored by no ok or info write" in verdict.anomalies[0]


def test_a_concurrent_write_may_be_ordered_either_way() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=5)
        .op("b/0", "set", "r0", "y", start=2, end=3)
        .op("f/0", "get", "r0", "y", start=10, end=11, final=True)
    )
    assert checkers.lost_writes(h.ops()).valid


def test_a_final_absent_read_loses_writes_after_the_last_delete() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "delete", "r0", start=3, end=4, result=True)
        .op("f/0", "get", "r0", None, start=10, end=11, final=True)
    )
    assert checkers.lost_writes(h.ops()).valid
    h.op("a/0", "set", "r0", "y", start=5, end=6)
    assert not checkers.lost_writes(h.ops()).valid


def test_a_deleted_key_must_stay_deleted() -> None:
    h = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "delete", "r0", start=3, end=4, result=True)
        .op("f/0", "get", "r0", "x", start=10, end=11, final=True)
    )
    verdict = checkers.resurrection(h.ops())
    assert len(verdict.anomalies) == 1
    assert "acked delete(s) came after it" in verdict.anomalies[0]
    # A write that may have come after the delete does not explain an older value...
    h.op("b/0", "set", "r0", "z", start=3.5, kind="info")
    assert not checkers.resurrection(h.ops()).valid
    # ...but it may explain its own.
    later = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=2)
        .op("a/0", "delete", "r0", start=3, end=4, result=True)
        .op("b/0", "set", "r0", "z", start=3.5, kind="info")
        .op("f/0", "get", "r0", "z", start=10, end=11, final=True)
    )
    assert checkers.resurrection(later.ops()).valid
    # A delete concurrent with the write may have come first.
    concurrent = (
        History()
        .op("a/0", "set", "r0", "x", start=1, end=5)
        .op("b/0", "delete", "r0", start=2, end=3, result=False)
        .op("f/0", "get", "r0", "x", start=10, end=11, final=True)
    )
    assert checkers.resurrection(concurrent.ops()).valid


# ---------------------------------------------------------------------- counters
def _counter(
    h: History, process: str, start: float, end: float | None, result: int | None, kind: str = "ok"
) -> None:
    h.op(process, "incr", "c0", 1, start=start, end=end, result=result, kind=kind)


def test_counters_within_bounds_pass() -> None:
    h = History()
    _counter(h, "a/0", 1, 2, 1)
    _counter(h, "a/0", 3, 4, 2)
    _counter(h, "b/0", 3, 4, None, kind="info")
    h.op("b/1", "get", "c0", 2, start=5, end=6)
    h.op("f/0", "get", "c0", 3, start=10, end=11, final=True)
    h.op("f/1", "get", "c0", 2, start=10, end=11, final=True)
    assert checkers.counters(h.ops()).valid


def test_counters_outside_bounds_or_going_down_fail() -> None:
    h = History()
    _counter(h, "a/0", 1, 2, 1)
    _counter(h, "a/0", 3, 4, 2)
    h.op("f/0", "get", "c0", 1, start=10, end=11, final=True)
    verdict = checkers.counters(h.ops())
    assert any("final read 1" in a for a in verdict.anomalies)
    down = History()
    _counter(down, "a/0", 1, 2, 1)
    _counter(down, "a/0", 3, 4, 2)
    _counter(down, "b/0", 3.5, 8, None, kind="info")
    down.op("c/0", "get", "c0", 3, start=5, end=6)
    down.op("c/0", "get", "c0", 2, start=6.5, end=7)
    verdict = checkers.counters(down.ops())
    assert len(verdict.anomalies) == 1
    assert "below 3" in verdict.anomalies[0]
    assert checkers.counters(down.ops(), exclude_reads_in=[(6 * MS, 7 * MS)]).valid
    counted_twice = History()
    _counter(counted_twice, "a/0", 1, 2, 2)
    assert not checkers.counters(counted_twice.ops()).valid


# ---------------------------------------------------------------------- locks
def _grant(
    h: History, process: str, start: float, end: float, token: int, release: float | None, lease=5.0
) -> None:
    h.op(process, "acquire", "l0", {"lease": lease, "timeout": 1}, start=start, end=end, result=token)
    if release is not None:
        h.op(process, "release", "l0", start=release, end=release + 0.5)


def test_locks_held_one_after_another_with_growing_tokens_pass() -> None:
    h = History()
    _grant(h, "a/0", 1, 2, 1, release=10)
    _grant(h, "b/0", 3, 11, 2, release=12)
    _grant(h, "a/0", 13, 14, 5, release=None)
    assert checkers.locks(h.ops()).valid


def test_two_holders_at_once_fail() -> None:
    h = History()
    _grant(h, "a/0", 100, 200, 1, release=1000)
    _grant(h, "b/0", 300, 400, 2, release=1200)
    verdict = checkers.locks(h.ops())
    assert len(verdict.anomalies) == 1
    assert "two holders at once" in verdict.anomalies[0]


def test_a_lease_or_a_fault_on_the_holder_ends_a_hold() -> None:
    lease = History()
    _grant(lease, "a/0", 1, 2, 1, release=5000, lease=1.0)
    _grant(lease, "b/0", 1500, 1600, 2, release=1700)
    assert checkers.locks(lease.ops()).valid
    paused = History()
    _grant(paused, "a/0", 1, 2, 1, release=5000, lease=10.0)
    _grant(paused, "b/0", 3000, 3100, 2, release=3200)
    assert not checkers.locks(paused.ops()).valid
    fault = Fault("pause", frozenset({"a"}), start=100 * MS, end=6000 * MS)
    assert checkers.locks(paused.ops(), [fault], holder_grace_ns=2000 * MS).valid
    # Within the failure timeout of the pause the old holder still held it.
    assert not checkers.locks(paused.ops(), [fault], holder_grace_ns=3050 * MS).valid


def test_fencing_tokens_must_grow_in_grant_order() -> None:
    h = History()
    _grant(h, "a/0", 1, 2, 7, release=3)
    _grant(h, "b/0", 4, 5, 7, release=6)
    _grant(h, "c/0", 8, 9, 3, release=10)
    verdict = checkers.locks(h.ops())
    assert any("granted twice" in a for a in verdict.anomalies)
    assert any("token 3" in a and "below token 7" in a for a in verdict.anomalies)


def test_a_grant_learned_after_its_hold_ended_holds_nothing() -> None:
    # a/0 was paused during its acquire: the grant (before the pause) ended with the pause's
    # grace; b/0 got the lock meanwhile; a/0 heard of its grant only after resuming.
    h = History()
    _grant(h, "a/0", 1, 4000, 1, release=4100, lease=10.0)
    _grant(h, "b/0", 2000, 2100, 2, release=4050)
    fault = Fault("pause", frozenset({"a"}), start=100 * MS, end=3900 * MS)
    assert checkers.locks(h.ops(), [fault], holder_grace_ns=950 * MS).valid
    assert not checkers.locks(h.ops()).valid


def test_a_cas_on_an_absent_key_never_applies() -> None:
    h = History().op("a/0", "cas", "r0", [None, "x"], start=1, end=2, result=False)
    h.op("b/0", "get", "r0", None, start=3, end=4)
    assert linearizable(h).valid
    applied = History().op("a/0", "cas", "r0", [None, "x"], start=1, end=2, result=True)
    assert not linearizable(applied).valid


def test_a_token_granted_again_to_a_holder_that_may_hold_it_reentrantly_is_not_reported() -> None:
    h = History()
    h.op("a/0", "acquire", "l0", {"lease": 5.0}, start=1, end=2, kind="info")
    _grant(h, "a/0", 100, 200, 7, release=300)
    _grant(h, "a/0", 400, 500, 7, release=600)
    assert checkers.locks(h.ops()).valid
    other = History()
    _grant(other, "a/0", 100, 200, 7, release=300)
    _grant(other, "a/0", 400, 500, 7, release=600)
    assert not checkers.locks(other.ops()).valid
