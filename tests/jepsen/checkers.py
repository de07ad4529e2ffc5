"""Checkers: pure functions over histories (lists of `Operation`), no I/O.

Each returns a `Verdict`: the anomalies it found (empty when the property holds) and, when the
check could not be completed (the linearizability search ran out of budget), ``unknown``:
a run with an unknown verdict does not pass.

- `lost_writes`: every acknowledged register write is still visible in the final reads, unless
  a write that may have come after it (ok or info) replaced it.
- `linearizable`: each register key's history is linearizable (Wing & Gong with Lowe's memo,
  `tests.jepsen.linear`); reads invoked inside fault windows can be left out.
- `counters`: final counter values within [acked, acked + indeterminate] increments, and every
  read during the run within the bounds of its time, never below an earlier read.
- `locks`: no two holders of a lock at once, fencing tokens increasing in grant order.
- `resurrection`: no final read returns a value written before an acknowledged delete (so a
  key whose last acknowledged write is a delete reads as absent at the end).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.jepsen.history import Fault, Operation, by_key
from tests.jepsen.linear import DEFAULT_BUDGET, check_register

INF = float("inf")


@dataclass
class Verdict:
    """What one checker found."""

    name: str
    anomalies: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """Checks that could not be completed (never counted as a pass)."""
    checked: int = 0
    """How many things (keys, writes, grants) were checked."""

    @property
    def valid(self) -> bool:
        """True when nothing anomalous and nothing unknown was found."""
        return not self.anomalies and not self.unknown

    def summary(self) -> str:
        """``ok``, ``N anomalies``, or ``unknown``, for the run table."""
        if self.anomalies:
            return f"{len(self.anomalies)} anomalies"
        if self.unknown:
            return f"unknown ({len(self.unknown)})"
        return "ok"


def _register_ops(ops: Iterable[Operation], prefix: str) -> list[Operation]:
    return [op for op in ops if op.key.startswith(prefix) and op.f in ("get", "set", "put", "cas", "delete")]


def _writes_value(op: Operation) -> bool:
    """True when ``op`` may have stored its value (a cas only if it may have applied)."""
    if op.type not in ("ok", "info"):
        return False
    if op.f in ("set", "put"):
        return True
    return op.f == "cas" and (op.type == "info" or bool(op.result))


def _written(op: Operation) -> Any:
    return op.value[1] if op.f == "cas" else op.value


# ---------------------------------------------------------------------- lost writes
def _distinct(finals: Sequence[Operation]) -> list[tuple[Operation, str]]:
    """One final read per distinct value, with the processes that read it."""
    groups: dict[str, list[Operation]] = {}
    for read in finals:
        groups.setdefault(repr(read.value), []).append(read)
    return [(reads[0], ", ".join(r.process for r in reads)) for reads in groups.values()]


def lost_writes(ops: Sequence[Operation], prefix: str = "r") -> Verdict:
    """Every acknowledged value write of a register must survive to the final reads.

    A final read of value ``v`` was produced by the write X that stored ``v`` (values are
    unique), or, for an absent key, by a delete or the initial state. Every acknowledged value
    write Y invoked after X completed (so Y surely followed X) is lost. A value no ok or info
    write stored is reported too (a write that failed definitely, or nobody's, was read).
    Lost deletes are `resurrection`'s business.
    """
    verdict = Verdict("lost-writes")
    for key, key_ops in by_key(_register_ops(ops, prefix)):
        finals = [op for op in key_ops if op.final and op.f == "get" and op.type == "ok"]
        if not finals:
            continue
        acked = [op for op in key_ops if _writes_value(op) and op.type == "ok" and not op.final]
        verdict.checked += len(acked)
        producers: dict[Any, Operation] = {_written(op): op for op in key_ops if _writes_value(op)}
        deletes = [op for op in key_ops if op.f == "delete" and op.type in ("ok", "info")]
        for read, readers in _distinct(finals):
            if read.value is None:
                # Produced by the initial state or a delete: the latest possible one counts.
                produced_at = max((d.end for d in deletes), default=-INF)
            elif read.value in producers:
                produced_at = producers[read.value].end
            else:
                verdict.anomalies.append(
                    f"{key}: final read {read.value!r} (by {readers}) was stored by no ok or info write"
                )
                continue
            lost = [y for y in acked if y.invoke > produced_at]
            if lost:
                newest = max(lost, key=lambda y: y.invoke)
                verdict.anomalies.append(
                    f"{key}: final read {read.value!r} (by {readers}) lost {len(lost)} acked "
                    f"write(s), the last {newest.brief()}"
                )
    return verdict


# ---------------------------------------------------------------------- resurrection
def resurrection(ops: Sequence[Operation], prefix: str = "r") -> Verdict:
    """An acknowledged delete must not be undone: no final read may return a value whose
    write surely came before an acknowledged delete of the key.

    Values are unique, so a final value ``v`` was stored by one write X; a delete invoked after
    X completed surely followed it, so ``v`` came back from the dead. (In particular a key
    whose last acknowledged write is a delete reads as absent, unless an ok or info write that
    may have come after the delete stored what is read.) A final value no write stored is
    `lost_writes`'s to report.
    """
    verdict = Verdict("resurrection")
    for key, key_ops in by_key(_register_ops(ops, prefix)):
        finals = [op for op in key_ops if op.final and op.f == "get" and op.type == "ok"]
        deletes = [op for op in key_ops if op.f == "delete" and op.type == "ok" and not op.final]
        if not finals or not deletes:
            continue
        verdict.checked += 1
        producers: dict[Any, Operation] = {_written(op): op for op in key_ops if _writes_value(op)}
        for read, readers in _distinct(finals):
            writer = producers.get(read.value) if read.value is not None else None
            if writer is None:
                continue
            after = [d for d in deletes if d.invoke > writer.end]
            if after:
                last = max(after, key=lambda d: d.invoke)
                verdict.anomalies.append(
                    f"{key}: the final read by {readers} returned {read.value!r}, stored by "
                    f"{writer.brief()}, yet {len(after)} acked delete(s) came after it, the last "
                    f"{last.brief()}"
                )
    return verdict


# ---------------------------------------------------------------------- linearizability
def in_windows(time: int, windows: Sequence[tuple[int, int]]) -> bool:
    """True when ``time`` falls inside one of ``windows`` (``(start, end)`` pairs, ns)."""
    return any(start <= time <= end for start, end in windows)


def linearizable(
    ops: Sequence[Operation],
    prefix: str = "r",
    *,
    exclude_reads_in: Sequence[tuple[int, int]] = (),
    budget: int = DEFAULT_BUDGET,
) -> Verdict:
    """Each register key's operations are linearizable.

    ``exclude_reads_in``: windows (monotonic ns) whose reads are not checked: a ``get`` invoked
    inside one is dropped, and so is a ``cas`` or ``delete`` that says it changed nothing (a
    read too, by its result: evaluated on one side of a split that has not merged yet, it
    compared with that side's value, and wrote nothing anywhere); a write invoked inside one
    must still take effect but what it returned (``put``'s previous value) is not checked.
    Reads that failed are dropped (they returned nothing); failed writes are dropped (they
    definitely did not happen).
    """
    verdict = Verdict("linearizable")
    for key, key_ops in by_key(_register_ops(ops, prefix)):
        kept = [
            op
            for op in key_ops
            if op.type in ("ok", "info")
            and not (op.f == "get" and (op.type != "ok" or in_windows(op.invoke, exclude_reads_in)))
            and not (_changed_nothing(op) and in_windows(op.invoke, exclude_reads_in))
        ]
        unchecked = frozenset(
            op.index for op in kept if op.f != "get" and in_windows(op.invoke, exclude_reads_in)
        )
        result = check_register(key, kept, unchecked_results=unchecked, budget=budget)
        verdict.checked += 1
        if result.valid is None:
            verdict.unknown.append(f"{key}: search budget of {budget} steps ran out ({len(kept)} ops)")
        elif not result.valid:
            lines = "\n    ".join(op.brief() for op in result.counterexample)
            verdict.anomalies.append(f"{key}: not linearizable; the window that fails:\n    {lines}")
    return verdict


def _changed_nothing(op: Operation) -> bool:
    """A ``cas`` or ``delete`` acknowledged as having changed nothing."""
    return op.type == "ok" and op.f in ("cas", "delete") and not op.result


# ---------------------------------------------------------------------- counters
def counters(
    ops: Sequence[Operation], prefix: str = "c", *, exclude_reads_in: Sequence[tuple[int, int]] = ()
) -> Verdict:
    """Counter values stay within what the increments allow.

    A final read must lie in [acked, acked + info] increments. A read during the run (a ``get``
    or an ``incr``'s returned count) must lie in [increments acked before it was invoked,
    increments ok or info invoked before it completed], and must not be below a read that
    completed before it was invoked (counters never go down). Reads invoked inside
    ``exclude_reads_in`` are not checked (the increments still count).
    """
    verdict = Verdict("counters")
    for key, key_ops in by_key(op for op in ops if op.key.startswith(prefix)):
        incrs = [op for op in key_ops if op.f == "incr" and op.type in ("ok", "info")]
        acked = sum(op.value for op in incrs if op.type == "ok")
        maybe = sum(op.value for op in incrs if op.type == "info")
        ok_completions = sorted(op.end for op in incrs if op.type == "ok")
        ok_prefix = _prefix_sums([op.value for op in sorted(incrs, key=lambda o: o.end) if op.type == "ok"])
        invocations = sorted((op.invoke, op.value) for op in incrs)
        inv_times = [t for t, _ in invocations]
        inv_prefix = _prefix_sums([v for _, v in invocations])
        reads: list[tuple[Operation, int]] = []
        for op in key_ops:
            if op.type != "ok" or (not op.final and in_windows(op.invoke, exclude_reads_in)):
                continue
            if op.f == "get":
                reads.append((op, op.value or 0))
            elif op.f == "incr" and op.result is not None:
                reads.append((op, op.result))
        verdict.checked += len(reads)
        for read, value in reads:
            if read.final:
                if not acked <= value <= acked + maybe:
                    verdict.anomalies.append(
                        f"{key}: final read {value} by {read.process} outside [{acked}, {acked + maybe}]"
                    )
                continue
            low = ok_prefix[bisect.bisect_left(ok_completions, read.invoke)]
            high = inv_prefix[bisect.bisect_left(inv_times, read.end)]
            if not low <= value <= high:
                verdict.anomalies.append(f"{key}: {read.brief()} read {value} outside [{low}, {high}]")
        by_end = sorted((read.end, value, read) for read, value in reads if not read.final)
        ends = [e for e, _, _ in by_end]
        best: list[tuple[int, Operation | None]] = [(-1, None)]
        for _, value, read in by_end:
            best.append(max(best[-1], (value, read), key=lambda pair: pair[0]))
        for read, value in reads:
            if read.final:
                continue
            earlier_value, earlier = best[bisect.bisect_left(ends, read.invoke)]
            if earlier is not None and value < earlier_value:
                verdict.anomalies.append(
                    f"{key}: {read.brief()} read {value}, below {earlier_value} read earlier by "
                    f"{earlier.brief()}"
                )
    return verdict


def _prefix_sums(values: Sequence[int]) -> list[int]:
    sums = [0]
    for value in values:
        sums.append(sums[-1] + value)
    return sums


# ---------------------------------------------------------------------- locks
def _reentrant(first: Operation, second: Operation, unsure: Sequence[Operation]) -> bool:
    """True when ``second`` may be a reentrant grant of ``first``'s hold: one holder, which
    had an ``info`` acquire (maybe granted, never released) before ``first``."""
    return first.process == second.process and any(
        op.process == first.process and op.invoke < first.invoke for op in unsure
    )


@dataclass(frozen=True)
class Hold:
    """An interval in which a grant was surely held (monotonic ns)."""

    grant: Operation
    start: int
    end: float
    why_end: str


def holds(ops: Sequence[Operation], faults: Sequence[Fault] = (), *, holder_grace_ns: int = 0) -> list[Hold]:
    """For every ``ok`` acquire, the interval in which the lock was surely held by it (none
    when that interval is empty: a holder paused during its acquire may learn of a grant that
    had already ended).

    It starts when the acquire returned, and ends at the first of: the holder's release was
    invoked; the lease ran out (counted from the acquire's invocation, the earliest moment the
    owner can have granted it); a fault touched the holder's host (its ``start`` plus its
    ``grace_ns``, or ``holder_grace_ns``: the documented tolerance, since a member that stops
    answering is dropped after the failure timeout and its locks are released with it).
    """
    result: list[Hold] = []
    by_process: dict[tuple[str, str], list[Operation]] = {}
    for op in ops:
        if op.f in ("acquire", "release"):
            by_process.setdefault((op.process, op.key), []).append(op)
    for seq in by_process.values():
        seq.sort(key=lambda op: op.invoke)
        for i, op in enumerate(seq):
            if op.f != "acquire" or op.type != "ok" or op.result is None or op.complete is None:
                continue
            ends: list[tuple[float, str]] = []
            release = next((r for r in seq[i + 1 :] if r.f == "release"), None)
            if release is not None:
                ends.append((release.invoke, "released"))
            lease = (op.value or {}).get("lease")
            if lease:
                ends.append((op.invoke + lease * 1e9, "lease ended"))
            for fault in faults:
                grace = holder_grace_ns if fault.grace_ns is None else fault.grace_ns
                if op.host in fault.hosts and fault.end >= op.invoke:
                    ends.append((max(fault.start, op.invoke) + grace, f"{fault.kind} on {op.host}"))
            end, why = min(ends, default=(INF, "never released"))
            if end > op.complete:  # else it may have ended before the holder even heard of it
                result.append(Hold(op, op.complete, end, why))
    return result


def locks(
    ops: Sequence[Operation],
    faults: Sequence[Fault] = (),
    *,
    holder_grace_ns: int = 0,
    tolerance_ns: int = 10_000_000,
) -> Verdict:
    """No two grants of a lock surely held at once; fencing tokens increase in grant order.

    ``tolerance_ns``: an overlap shorter than this is not reported (the lease is timed on the
    owner, the same clock, but checked when the next request comes). A grant surely followed
    another (it was invoked after the other returned) must carry a greater token; no two
    grants may carry the same token, unless both went to one holder that may still have held
    the lock through an earlier acquire of unknown outcome (``info``): a reentrant grant
    keeps its token.
    """
    verdict = Verdict("locks")
    lock_ops = [op for op in ops if op.f in ("acquire", "release")]
    if not lock_ops:
        return verdict
    all_holds = holds(lock_ops, faults, holder_grace_ns=holder_grace_ns)
    per_key: dict[str, list[Hold]] = {}
    for hold in all_holds:
        per_key.setdefault(hold.grant.key, []).append(hold)
    for key, key_holds in sorted(per_key.items()):
        verdict.checked += len(key_holds)
        key_holds.sort(key=lambda h: h.start)
        latest: Hold | None = None
        for hold in key_holds:
            if latest is not None and hold.start < latest.end - tolerance_ns:
                verdict.anomalies.append(
                    f"{key}: two holders at once: {latest.grant.brief()} held until "
                    f"{latest.end / 1e9:.3f} ({latest.why_end}), and {hold.grant.brief()}"
                )
            if latest is None or hold.end > latest.end:
                latest = hold
    for key, key_grants in by_key(op for op in lock_ops if op.f == "acquire" and op.type == "ok"):
        grants = sorted(key_grants, key=lambda g: g.end)
        unsure = [op for op in lock_ops if op.key == key and op.f == "acquire" and op.type == "info"]
        seen: dict[Any, Operation] = {}
        for grant in grants:
            other = seen.setdefault(grant.result, grant)
            if other is not grant and not _reentrant(other, grant, unsure):
                verdict.anomalies.append(
                    f"{key}: token {grant.result} granted twice: {other.brief()}, {grant.brief()}"
                )
        ends = [g.end for g in grants]
        best: list[tuple[int, Operation | None]] = [(-1, None)]
        for grant in grants:
            best.append(max(best[-1], (grant.result, grant), key=lambda pair: pair[0]))
        for grant in grants:
            top, before = best[bisect.bisect_left(ends, grant.invoke)]
            if before is not None and grant.result < top:  # equal ones: "granted twice"
                verdict.anomalies.append(
                    f"{key}: token {grant.result} of {grant.brief()} below token {top} granted "
                    f"before it ({before.brief()})"
                )
    return verdict
