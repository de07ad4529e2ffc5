"""Linearizability of one register: the Wing & Gong search with Lowe's improvements.

The history of one key is a list of `Operation` values (P-compositionality: each key of a map
is a register of its own, so `checkers.linearizable` checks keys one at a time). The search
(after Lowe, "Testing for linearizability", 2017, and Porcupine's implementation):

- the call and return events of the operations sit in one doubly linked list, in time order;
- the search walks the list: at a call, it tries to linearize that operation now (the model
  accepts its result in the current state), removes ("lifts") its call and return from the list
  and starts again from the head; at a return, the operation ended without being linearized,
  so it backtracks to the last choice and tries the next call after it;
- Lowe's memo: a (set of linearized operations, state) pair already explored is not explored
  again; the set is an int bitmask;
- an ``info`` operation has no return event: it may be linearized at any point after its call,
  or never (the search succeeds as soon as every completed operation is linearized).

The search is bounded by a step budget; past it the answer is "unknown" (None), never a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.jepsen.history import Operation

#: The model's verdict on an operation that cannot happen in a state.
INVALID = object()

#: Default step budget of one key's search.
DEFAULT_BUDGET = 2_000_000


@dataclass(frozen=True)
class KeyVerdict:
    """The outcome of checking one key."""

    key: str
    valid: bool | None
    """True: linearizable; False: not; None: unknown (the budget ran out)."""
    steps: int
    counterexample: list[Operation] = field(default_factory=list)
    """For an invalid key: the operation that could not be linearized, the operations
    concurrent with it, and the writes just before it."""


def step(state: Any, op: Operation, result_known: bool) -> Any:
    """The register's state after ``op`` in ``state``, or `INVALID`.

    ``result_known`` is False for an ``info`` operation (it returned nothing we know) and for
    a write whose result the caller chose not to check (a read inside a fault window).
    States are the stored value, None when the key is absent.
    """
    f = op.f
    if f == "get":
        return state if state == op.value else INVALID
    if f == "set":
        return op.value
    if f == "put":
        if result_known and op.result != state:
            return INVALID
        return op.value
    if f == "cas":
        old, new = op.value
        applies = state is not None and state == old  # an absent key equals nothing
        if result_known and bool(op.result) != applies:
            return INVALID
        return new if applies else state
    if f == "delete":
        if result_known and bool(op.result) != (state is not None):
            return INVALID
        return None
    raise ValueError(f"not a register operation: {op.f}")


def check_register(
    key: str,
    ops: Sequence[Operation],
    *,
    unchecked_results: frozenset[int] = frozenset(),
    budget: int = DEFAULT_BUDGET,
    initial: Any = None,
) -> KeyVerdict:
    """Whether ``ops`` (``ok`` and ``info`` operations of one key) are linearizable.

    ``unchecked_results`` names (by `Operation.index`) writes whose returned value is not
    checked: they must still take effect, but what they returned is ignored.
    """
    ops = [op for op in ops if op.type in ("ok", "info")]
    if not ops:
        return KeyVerdict(key, True, 0)
    # Events: (time, order, op position, is_call). At equal times calls go first, which treats
    # the two operations as concurrent (the permissive reading: never a false anomaly).
    events: list[tuple[int, int, int, bool]] = []
    for i, op in enumerate(ops):
        events.append((op.invoke, 0, i, True))
        if op.complete is not None:
            events.append((op.complete, 1, i, False))
    events.sort()
    count = len(events)
    # A doubly linked list over the events with a head sentinel at position `count`.
    nxt = [*range(1, count + 1), 0]
    prv = [count, *range(count)]
    end = count
    ev_op = [e[2] for e in events]
    ev_call = [e[3] for e in events]
    ret_of = [-1] * len(ops)
    for pos, (_, _, i, is_call) in enumerate(events):
        if not is_call:
            ret_of[i] = pos
    known = [op.type == "ok" and op.index not in unchecked_results for op in ops]
    # A completed read (or a cas or delete that changed nothing, by its known result) leaves the
    # state as it is wherever it is placed. Placing it as soon as the state allows is never worse
    # than later: whatever had to precede it already does, and whatever must follow it still
    # can. So when such a placement fails, the search does not try the alternatives (Lowe's
    # observation for commuting reads); without this, concurrent readers make it exponential.
    pure = [known[i] and _is_pure(op) for i, op in enumerate(ops)]

    def lift(pos: int) -> None:
        nxt[prv[pos]] = nxt[pos]
        prv[nxt[pos]] = prv[pos]
        r = ret_of[ev_op[pos]]
        if r >= 0:
            nxt[prv[r]] = nxt[r]
            prv[nxt[r]] = prv[r]

    def unlift(pos: int) -> None:
        r = ret_of[ev_op[pos]]
        if r >= 0:
            nxt[prv[r]] = r
            prv[nxt[r]] = r
        nxt[prv[pos]] = pos
        prv[nxt[pos]] = pos

    remaining = sum(1 for op in ops if op.type == "ok")
    state = initial
    linearized = 0
    memo: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any, bool]] = []
    entry = nxt[end]
    steps = 0
    deepest = (-1, -1)  # (linearized count, op position) at the deepest dead end
    while remaining:
        steps += 1
        if steps > budget:
            return KeyVerdict(key, None, steps)
        if entry == end or not ev_call[entry]:
            if entry != end and len(stack) > deepest[0]:
                deepest = (len(stack), ev_op[entry])
            while True:
                if not stack:
                    return KeyVerdict(key, False, steps, _counterexample(ops, deepest[1]))
                entry, state, forced = stack.pop()
                i = ev_op[entry]
                linearized &= ~(1 << i)
                unlift(entry)
                if ops[i].type == "ok":
                    remaining += 1
                if not forced:
                    break
            entry = nxt[entry]
            continue
        i = ev_op[entry]
        new = step(state, ops[i], known[i])
        if new is not INVALID:
            marked = linearized | (1 << i)
            if (marked, new) not in memo:
                memo.add((marked, new))
                stack.append((entry, state, pure[i]))
                state, linearized = new, marked
                lift(entry)
                if ops[i].type == "ok":
                    remaining -= 1
                entry = nxt[end]
                continue
        entry = nxt[entry]
    return KeyVerdict(key, True, steps)


def _is_pure(op: Operation) -> bool:
    """True for an operation that, by its result, changed nothing."""
    return op.f == "get" or (op.f in ("cas", "delete") and not op.result)


def _counterexample(ops: Sequence[Operation], stuck: int, writes_before: int = 4) -> list[Operation]:
    """The smallest window that shows the failure: the operation whose return came before it
    could be linearized, what ran concurrently with it, and the last writes before it."""
    if stuck < 0:
        return list(ops[-writes_before:])
    bad = ops[stuck]
    concurrent = [op for op in ops if op.invoke <= bad.end and op.end >= bad.invoke]
    earlier = [op for op in ops if op.f != "get" and op.complete is not None and op.complete < bad.invoke]
    earlier.sort(key=lambda op: op.end)
    window = {op.index: op for op in [*earlier[-writes_before:], *concurrent]}
    return sorted(window.values(), key=lambda op: op.invoke)
